"""`podenv boot`: make a release ready on the volume, then exec the worker in it.

Warm path: the release's view and every layer's marker are on the volume; nothing is read
from the store (it need not even be reachable for a pinned release), and the process
execs at once. This module imports nothing heavy at the top for that reason.

Cold path, per missing layer: take the layer's lease (or wait for its holder), check the
space, stream the blob (parallel ranged GETs in order) through sha256, zstd and the safe
extractor into a private staging directory, relocate the env to its final path, write the
marker, rename into place. A worker that loses a race throws its staging away.
"""

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podenv.errors import PodenvError, StoreError
from podenv.log import get_logger
from podenv.progress import human_bytes
from podenv.volume import (
    RELEASE_MARKER,
    Lease,
    Volume,
    discard,
    held,
    layer_is_installed,
    publish_directory,
    read_marker,
    write_marker,
)

_log = get_logger("boot")
DEFAULT_CHANNEL = "stable"
SPACE_MARGIN = 256 << 20
_POLL = 0.25


class BootError(PodenvError):
    exit_code = 11


@dataclass
class BootOptions:
    env: str
    root: Path
    store_url: str | None = None
    version: str | None = None
    digest: str | None = None
    channel: str = DEFAULT_CHANNEL
    keep_blobs: bool = False
    quota: int | None = None
    lease_timeout: float = 60.0
    wait_timeout: float = 400.0
    # Parallel file writers: they pay off where a create is a network round trip (the
    # volume); on a local disk or tmpfs with few cores, fewer writers are faster.
    writers: int = 16


@dataclass
class BootReport:
    env: str
    started: float = field(default_factory=time.time)
    version: str | None = None
    digest: str | None = None
    warm: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    bytes_fetched: int = 0
    bytes_written: int = 0
    files: int = 0
    layers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - since, 4)
        return now

    def to_json(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document.update(host=socket.gethostname(), pid=os.getpid())
        return document


@dataclass(frozen=True)
class ReadyRelease:
    directory: Path
    env_prefix: Path
    version: str
    digest: str


# Resolving which release to boot


def _local_release(volume: Volume, name: str, version: str) -> dict[str, Any] | None:
    """The installed release's marker, if the release and every layer it names are complete."""
    marker = read_marker(volume.release_dir(name, version), RELEASE_MARKER)
    if marker is None:
        return None
    if all(layer_is_installed(volume, digest) for digest in marker["layers"]):
        return marker
    return None


def _local_release_by_digest(volume: Volume, name: str, digest: str) -> dict[str, Any] | None:
    releases = volume.root / "releases" / name
    for directory in sorted(releases.glob("*")) if releases.is_dir() else []:
        marker = _local_release(volume, name, directory.name)
        if marker is not None and marker["digest"] == digest:
            return marker
    return None


def _open_store(options: BootOptions) -> Any:
    from podenv.store import open_store

    if not options.store_url:
        raise BootError("no store given: set PODENV_STORE (or --store) to the store the release lives in.")
    return open_store(options.store_url)


def _channel_target(options: BootOptions, volume: Volume, report: BootReport) -> tuple[str, str]:
    """(version, digest) the channel points at; from the store, or its last known value offline."""
    cache = volume.channel_cache(options.env, options.channel)
    try:
        pointer = _open_store(options).read_channel(options.env, options.channel)
    except StoreError as error:
        if not cache.exists():
            raise BootError(f"cannot resolve channel {options.channel} of {options.env}: {error}") from None
        known = json.loads(cache.read_text())
        report.warnings.append(
            f"store unreachable; channel {options.channel} last pointed at {known['version']}"
        )
        _log.warning(report.warnings[-1])
        return known["version"], known["digest"]
    if pointer is None:
        raise BootError(
            f"channel {options.channel} of {options.env} does not exist in {options.store_url}; "
            "publish with --channel or pin PODENV_VERSION."
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    partial.write_bytes(pointer.data)
    partial.replace(cache)  # other workers read it offline: whole or the previous one
    document = json.loads(pointer.data)
    return document["version"], document["digest"]


def _find_version_by_digest(options: BootOptions) -> str:
    from podenv.digests import digest_bytes

    store = _open_store(options)
    for version in store.list_versions(options.env):
        if digest_bytes(store.get_release(options.env, version)) == options.digest:
            return version
    raise BootError(f"no release of {options.env} in {options.store_url} has digest {options.digest}.")


def _check_names(options: BootOptions) -> None:
    """Names become paths on the volume: refuse any that could leave it."""
    from podenv.digests import digest_hex
    from podenv.names import check_name

    check_name("env name", options.env)
    check_name("channel", options.channel)
    if options.version:
        check_name("version", options.version)
    if options.digest:
        digest_hex(options.digest)


def _pinned_warm(options: BootOptions, volume: Volume) -> dict[str, Any] | None:
    if options.version:
        marker = _local_release(volume, options.env, options.version)
        if marker is not None and (options.digest is None or marker["digest"] == options.digest):
            return marker
        return None
    if options.digest:
        return _local_release_by_digest(volume, options.env, options.digest)
    return None


# Installing


def _layer_source(store: Any, volume: Volume, layer: Any, keep_blobs: bool, report: BootReport):
    """Chunks of the layer's blob: from the volume's blob cache, or from the store."""
    from podenv.fileio import read_file_chunks
    from podenv.progress import Progress

    cached = volume.blob_path(layer.digest)
    if cached.is_file() and cached.stat().st_size == layer.size:
        report.layers[layer.name] = "blob-cache"
        return read_file_chunks(cached), None
    progress = Progress(f"fetch {layer.name}", total=layer.size)
    chunks = store.read_blob(layer.digest, progress)
    if not keep_blobs:
        return chunks, None
    volume.blobs.mkdir(parents=True, exist_ok=True)
    sink_path = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
    return _tee(chunks, sink_path), sink_path


def _tee(chunks, path: Path):
    with open(path, "wb") as sink:
        for chunk in chunks:
            sink.write(chunk)
            yield chunk


def _extract_layer(store: Any, volume: Volume, layer: Any, options: BootOptions, report: BootReport) -> None:
    from podenv.archive import extract_stream
    from podenv.relocate import relocate

    final = volume.layer_dir(layer.digest)
    staging = volume.new_staging(layer.digest.removeprefix("sha256:")[:16])
    target = staging / "layer"
    chunks, blob_partial = _layer_source(store, volume, layer, options.keep_blobs, report)
    try:
        result = extract_stream(
            chunks, target, expected_digest=layer.digest, label=f"layer {layer.name}", writers=options.writers
        )
        if blob_partial is not None:
            blob_partial.replace(volume.blob_path(layer.digest))
        if layer.kind == "env":
            relocate(target, str(final))
        marker = {"digest": layer.digest, "name": layer.name, "files": result.files}
        marker.update(bytes=result.bytes_written, installed_at=time.time())
        write_marker(target, marker)
        if publish_directory(target, final):
            report.layers.setdefault(layer.name, "installed")
        else:
            report.layers[layer.name] = "lost-race"
        if report.layers[layer.name] != "blob-cache":
            report.bytes_fetched += result.size
        report.bytes_written += result.bytes_written
        report.files += result.files
    finally:
        discard(staging)
        if blob_partial is not None:
            blob_partial.unlink(missing_ok=True)


def install_layer(store: Any, volume: Volume, layer: Any, options: BootOptions, report: BootReport) -> None:
    """Make one layer present: install it, or wait for the worker that holds its lease."""
    if layer_is_installed(volume, layer.digest):
        report.layers[layer.name] = "present"
        return
    # Beat well within the timeout others judge the lease by, or a live holder looks stale.
    heartbeat = min(2.0, options.lease_timeout / 3)
    lease_path = volume.leases / f"{layer.digest.removeprefix('sha256:')}.lease"
    lease = Lease(lease_path, options.lease_timeout, heartbeat)
    deadline = time.monotonic() + options.wait_timeout
    waited = False
    while not lease.try_take():
        waited = True
        if layer_is_installed(volume, layer.digest):
            report.layers[layer.name] = "waited"
            return
        if time.monotonic() > deadline:
            raise BootError(
                f"gave up after {options.wait_timeout:.0f}s waiting for another worker "
                f"to install layer {layer.name}."
            )
        time.sleep(_POLL)
    with held(lease):
        if layer_is_installed(volume, layer.digest):
            # Found complete once the holder let go: we waited for it, it was not there before.
            report.layers[layer.name] = "waited" if waited else "present"
            return
        _extract_layer(store, volume, layer, options, report)


def _directory_bytes(volume: Volume) -> int:
    total = 0
    for layer in volume.layer_dirs():
        marker = read_marker(layer)
        total += marker["bytes"] if marker else 0
    return total


def space_needed(missing: list[Any], keep_blobs: bool) -> int:
    """Bytes the missing layers take on the volume once installed (and their blobs, if kept)."""
    return sum(layer.unpacked_size + (layer.size if keep_blobs else 0) for layer in missing)


def space_free(volume: Volume, quota: int | None) -> int:
    """Bytes podenv may still write: the filesystem's free space, or less under a quota."""
    filesystem = os.statvfs(volume.root)
    free = filesystem.f_bavail * filesystem.f_frsize
    if quota is not None:
        free = min(free, max(quota - _directory_bytes(volume), 0))
    return free


def check_space(volume: Volume, missing: list[Any], options: BootOptions) -> None:
    """Refuse before the first byte is fetched if the layers cannot fit."""
    needed = space_needed(missing, options.keep_blobs)
    if not needed:
        return
    free = space_free(volume, options.quota)
    if needed + SPACE_MARGIN > free:
        raise BootError(
            f"not enough space on {volume.root}: the release needs {human_bytes(needed)} "
            f"(+{human_bytes(SPACE_MARGIN)} margin) but {human_bytes(free)} is free; "
            "grow the volume or run `podenv gc`."
        )


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def _build_view(volume: Volume, manifest: Any, staging: Path) -> None:
    """The release directory: its manifest, the env, and one cache dir per target."""
    staging.mkdir()
    (staging / "release.json").write_bytes(manifest.canonical_bytes())
    for layer in manifest.layers:
        layer_dir = volume.layer_dir(layer.digest)
        if layer.target == "env":
            _link(staging / "env", layer_dir)
        elif layer.target == "hf-hub":
            for entry in sorted(layer_dir.iterdir()):
                if entry.name != ".podenv-layer.json":
                    _link(staging / "hf-hub" / entry.name, entry)
        else:
            for path in sorted(layer_dir.rglob("*")):
                if path.is_file() and path.name != ".podenv-layer.json":
                    _link(staging / "torch" / path.relative_to(layer_dir), path)
    marker = {"name": manifest.name, "version": manifest.version, "digest": manifest.digest}
    marker.update(layers=[layer.digest for layer in manifest.layers], installed_at=time.time())
    write_marker(staging, marker, RELEASE_MARKER)


def _install_release(
    options: BootOptions, volume: Volume, version: str, digest: str | None, report: BootReport
):
    from podenv.gpu import check_driver, driver_cuda_version
    from podenv.manifest import Manifest

    since = time.monotonic()
    store = _open_store(options)
    manifest = Manifest.from_bytes(store.get_release(options.env, version))
    if digest is not None and manifest.digest != digest:
        raise BootError(
            f"release {options.env} {version} has digest {manifest.digest}, not the pinned {digest}."
        )
    report.version, report.digest = manifest.version, manifest.digest
    since = report.phase("resolve", since)
    check_driver(manifest.cuda, driver_cuda_version(), f"{manifest.name} {manifest.version}")
    missing = [layer for layer in manifest.layers if not layer_is_installed(volume, layer.digest)]
    check_space(volume, missing, options)
    since = report.phase("preflight", since)
    for layer in manifest.layers:
        install_layer(store, volume, layer, options, report)
        since = report.phase(f"layer:{layer.name}", since)
    staging = volume.new_staging(f"release-{options.env}-{version}")
    final = volume.release_dir(options.env, version)
    try:
        _build_view(volume, manifest, staging / "view")
        publish_directory(staging / "view", final)
    finally:
        discard(staging)
    report.phase("view", since)


def prepare(options: BootOptions, report: BootReport) -> ReadyRelease:
    """Make the asked-for release ready on the volume (warm or cold), recording how in ``report``."""
    started = since = time.monotonic()
    _check_names(options)
    volume = Volume(options.root)
    volume.make_dirs()
    marker = _pinned_warm(options, volume)
    if marker is None and not options.version and not options.digest:
        version, digest = _channel_target(options, volume, report)
        marker = _local_release(volume, options.env, version)
        if marker is not None and marker["digest"] != digest:
            raise BootError(
                f"the volume's release {options.env} {version} differs from the store's ({digest})."
            )
    elif marker is None:
        version = options.version or _find_version_by_digest(options)
        digest = options.digest
    report.warm = marker is not None
    if marker is None:
        try:
            _install_release(options, volume, version, digest, report)
        except StoreError as error:
            raise BootError(f"cold boot of {options.env} needs the store and it failed: {error}") from None
        marker = _local_release(volume, options.env, version)
        assert marker is not None
    else:
        report.phase("resolve", since)
        # Recency for `podenv gc --keep N`: the release marker's mtime is its last boot.
        os.utime(volume.release_dir(options.env, marker["version"]) / RELEASE_MARKER)
    report.version, report.digest = marker["version"], marker["digest"]
    directory = volume.release_dir(options.env, marker["version"])
    report.phases["total"] = round(time.monotonic() - started, 4)
    return ReadyRelease(directory, (directory / "env").resolve(), marker["version"], marker["digest"])


def write_report(volume_root: Path, report: BootReport) -> Path:
    reports = Volume(volume_root).reports
    reports.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(report.started))
    path = reports / f"{stamp}-{socket.gethostname()}-{os.getpid()}.json"
    path.write_text(json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def summary_line(report: BootReport) -> str:
    kind = "warm" if report.warm else "cold"
    line = f"boot {report.env} {report.version} ({report.digest}): {kind} in {report.phases['total']:.2f}s"
    if not report.warm:
        line += (
            f", fetched {human_bytes(report.bytes_fetched)}, wrote {human_bytes(report.bytes_written)} "
            f"in {report.files} files"
        )
    return line


TELEMETRY_OFF = {
    "ORT_DISABLE_TELEMETRY": "1",
    "PYANNOTE_METRICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
STORE_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def worker_environment(ready: ReadyRelease, base: dict[str, str]) -> dict[str, str]:
    """The variables the worker runs with: the env's own tools first, the release's caches, offline."""
    env = dict(base)
    prefix = str(ready.env_prefix)
    env["PATH"] = os.pathsep.join([f"{prefix}/bin", f"{prefix}/local/bin", base.get("PATH", "/usr/bin:/bin")])
    env["CONDA_PREFIX"] = prefix
    env["HF_HUB_CACHE"] = str(ready.directory / "hf-hub")
    env["TORCH_HOME"] = str(ready.directory / "torch")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    # Libraries the plugins import phone home unless told not to (onnxruntime, under pyannote,
    # connects to Microsoft's telemetry endpoint at import on Linux).
    env.update(TELEMETRY_OFF)
    env["PODENV_RELEASE"] = str(ready.directory / "release.json")
    env.pop("PYTHONHOME", None)
    # The store's credentials were for boot; the handler and its model code never need them.
    for name in STORE_CREDENTIALS:
        env.pop(name, None)
    return env


def exec_into(ready: ReadyRelease, command: list[str]) -> None:
    environment = worker_environment(ready, dict(os.environ))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 - exec is the point of boot
    except OSError as error:
        raise BootError(f"cannot run {command[0]!r} in {ready.env_prefix}: {error.strerror}.") from None
