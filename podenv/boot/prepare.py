"""The whole boot: resolve the release, use it warm from the volume or install it cold."""

import os
import time
from contextlib import suppress
from typing import Any

from podenv.boot.install import clear_garbled, install_missing
from podenv.boot.local import install_local_env
from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport, ReadyRelease, reserve_report
from podenv.boot.space import check_space
from podenv.boot.views import build_view
from podenv.boot.warm import local_release, pinned_warm, warmed_manifest
from podenv.errors import BootError, StoreError
from podenv.layout import CODE_TARGET, ENV_TARGET, VIEW_DIRS
from podenv.log import get_logger
from podenv.manifest import Manifest
from podenv.resolve import Target, channel_target, check_names, load_manifest, pinned_target
from podenv.store import Store
from podenv.volume import (
    RELEASE_MARKER,
    Volume,
    discard,
    hold_in_use,
    installing,
    layer_is_installed,
    publish_directory,
    read_marker,
    reclaim_dead,
)

_log = get_logger("boot")
_VISIBILITY_GRACE = 3.0


def _open_store(options: BootOptions, until: float | None = None) -> Store:
    """The store; ``until`` (time.monotonic()) ends every read of it, whatever blob it is."""
    from podenv.store import TransferConfig, open_store

    if not options.store_url:
        raise BootError(
            "no store given", fix="set PODENV_STORE (or --store) to the store the release lives in."
        )
    return open_store(options.store_url, transfer=TransferConfig(until=until))


def _channel_target(options: BootOptions, volume: Volume, report: BootReport) -> Target:
    """The release the channel points at; from the store, or its last known value offline."""
    cache = volume.channel_cache(options.env_name, options.channel)
    try:
        pointer = _open_store(options).read_channel(options.env_name, options.channel)
    except StoreError as error:
        if not cache.exists():
            raise BootError(f"cannot resolve channel {options.channel} of {options.env}: {error}") from None
        target = channel_target(options, cache.read_bytes())
        report.warnings.append(
            f"store unreachable; channel {options.channel} last pointed at {target.version}"
        )
        _log.warning(report.warnings[-1])
        return target
    target = channel_target(options, pointer.data if pointer else None)
    assert pointer is not None  # channel_target refuses an absent pointer
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    partial.write_bytes(pointer.data)
    partial.replace(cache)  # other workers read it offline: whole or the previous one
    return target


def _preflight(options: BootOptions, volume: Volume, local: Volume | None, manifest: Manifest) -> None:
    """Space on each disk a byte will land on, checked separately, before the first byte."""
    if local is None:
        missing = [layer for layer in manifest.layers if not layer_is_installed(volume, layer.digest)]
        check_space(volume, missing, options.quota, options.keep_blobs)
        return
    envs = [layer for layer in manifest.layers if layer.kind == "env"]
    models = [layer for layer in manifest.layers if layer.kind != "env"]
    missing_local = [layer for layer in envs if not layer_is_installed(local, layer.digest)]
    uncached = [layer for layer in missing_local if not volume.blob_path(layer.digest).is_file()]
    check_space(local, missing_local, None, local=True)
    missing = [layer for layer in models if not layer_is_installed(volume, layer.digest)]
    check_space(volume, missing, options.quota, options.keep_blobs, blobs=uncached)


def _install_release(
    options: BootOptions,
    volume: Volume,
    local: Volume | None,
    target: Target,
    report: BootReport,
    until: float,
) -> None:
    from podenv.gpu import check_driver, driver_cuda_version

    since = time.monotonic()
    # Opening connects nowhere: a warmed volume may need no store. Every blob of the install
    # is read by ``until``, each also within its own deadline.
    store = _open_store(options, until)
    manifest = warmed_manifest(volume, options.env_name, target) or load_manifest(
        store, options.env_name, target
    )
    report.version, report.digest = manifest.version, manifest.digest
    since = report.phase("resolve", since)
    check_driver(manifest.cuda, driver_cuda_version(), f"{manifest.name} {manifest.version}")
    digests = [layer.digest for layer in manifest.layers]
    from podenv.runpod.mount import without_network_volume

    cache_blobs = not without_network_volume(options.root)
    with installing(volume, manifest.name, manifest.version, digests, options.lease_timeout):
        _preflight(options, volume, local, manifest)
        since = report.phase("preflight", since)
        _install_layers(store, volume, local, manifest, options, report, cache_blobs)
        since = report.phase("layers", since)
        _publish_views(volume, local, manifest, report)
    report.phase("view", since)


def _install_layers(
    store: Store,
    volume: Volume,
    local: Volume | None,
    manifest: Manifest,
    options: BootOptions,
    report: BootReport,
    cache_blobs: bool = True,
) -> None:
    """Every missing layer through one pool of processes; with placement=local the env goes to
    the worker's disk (its shards cached on the volume), an old-format env by its own stream.
    ``cache_blobs`` off (no network volume): nothing is cached on the volume root, which is on
    the same container disk; an old-format env streams from the store to the local disk."""
    if local is None:
        install_missing(store, volume, manifest.layers, options, report)
        return
    for layer in manifest.layers:
        if layer.kind == "env" and layer.sharded:
            install_missing(store, local, [layer], options, report, cache=volume if cache_blobs else None)
        elif layer.kind == "env":
            install_local_env(store, volume, local, layer, options, report, cache=cache_blobs)
    models = [layer for layer in manifest.layers if layer.kind != "env"]
    install_missing(store, volume, models, options, report)


def _publish_views(volume: Volume, local: Volume | None, manifest: Manifest, report: BootReport) -> None:
    name, version = manifest.name, manifest.version
    if local is None:
        complete = local_release(volume, name, version) is not None
        _publish_view(volume, manifest, volume, volume, "volume", complete, report)
        return
    # The volume's record first (gc keeps the models and blobs it names), then the worker's.
    if read_marker(volume.release_dir(name, version), RELEASE_MARKER) is None:
        _publish_view(volume, manifest, volume, None, "local", False, report)
    complete = local_release(volume, name, version, local) is not None
    _publish_view(volume, manifest, local, local, "local", complete, report)


def _publish_view(
    volume: Volume,
    manifest: Manifest,
    home: Volume,
    env_home: Volume | None,
    placement: str,
    complete: bool,
    report: BootReport,
) -> None:
    """Build a release view in staging on ``home`` and rename it into place (``complete``: a
    whole one is there already; a garbled one is moved aside first)."""
    staging = home.new_staging(f"release-{manifest.name}-{manifest.version}")
    final = home.release_dir(manifest.name, manifest.version)
    try:
        build_view(volume, manifest, staging / "view", env_home, placement)
        clear_garbled(final, complete, f"release {manifest.name} {manifest.version}", report)
        publish_directory(staging / "view", final)
    finally:
        discard(staging)


def _warm_or_target(
    options: BootOptions, volume: Volume, report: BootReport
) -> tuple[dict[str, Any] | None, Target]:
    """The complete release's marker on the volume (None: cold), and the release resolved."""
    local = _local_volume(options)
    marker = pinned_warm(options, volume, local)
    if marker is not None:
        return marker, Target(marker["version"], marker["digest"], "pinned")
    pinned = pinned_target(options, lambda: _open_store(options))
    if pinned is not None:
        return None, pinned
    target = _channel_target(options, volume, report)
    marker = local_release(volume, options.env_name, target.version, local)
    if marker is not None and marker["digest"] != target.digest:
        raise BootError(
            f"the volume's release {options.env} {target.version} differs from the store's ({target.digest})."
        )
    return marker, target


def _visible_release(volume: Volume, name: str, version: str, local: Volume | None) -> dict[str, Any] | None:
    """The release just installed, looked for again for a few seconds: when another host won the
    view's rename, a network filesystem may show it here only after its name cache expires."""
    deadline = time.monotonic() + _VISIBILITY_GRACE
    while (marker := local_release(volume, name, version, local)) is None and time.monotonic() < deadline:
        time.sleep(0.25)
    return marker


def _local_volume(options: BootOptions) -> Volume | None:
    """The worker's own disk, with placement=local (None with placement=volume)."""
    if not options.local:
        return None
    if options.local_root is None:
        raise BootError("placement local needs a local root", fix="set PODENV_LOCAL_ROOT (or --local-root).")
    return Volume(options.local_root)


def prepare(options: BootOptions, report: BootReport, claim_in_use: bool = False) -> ReadyRelease:
    """Make the asked-for release ready on the volume (warm or cold), recording how in ``report``.

    ``claim_in_use`` (for `boot --exec`): the release's in-use file is taken as soon as its
    version is known, before the install's own claim (`installing/`) is dropped, and it lives
    as long as this process and what it execs; gc reads `installing/` before `in-use/`, so it
    always sees one of them (ADR 0011)."""
    from podenv.runpod.mount import FIX, missing_network_volume

    started = since = time.monotonic()
    check_names(options)
    missing = missing_network_volume(options.root)
    if missing:
        raise BootError(f"{missing}; {FIX}.")
    volume = Volume(options.root)
    volume.make_dirs()
    reserve_report(options.root, report)  # a boot that fills the disk can still report it
    reclaim_dead(volume, options.lease_timeout)
    local = _local_volume(options)
    if local is not None:
        local.make_dirs()
    report.placement = options.placement
    marker, target = _warm_or_target(options, volume, report)
    if claim_in_use:
        timeout = options.lease_timeout
        hold_in_use(volume, options.env_name, target.version, heartbeat=timeout / 3, timeout=timeout)
        if marker is not None:  # a gc may have removed it before the claim: looked for once more
            marker = local_release(volume, options.env_name, target.version, local)
    report.warm = marker is not None
    if marker is None:
        from podenv.store.backend import install_deadline

        until = time.monotonic() + install_deadline()  # one deadline over the whole install
        try:
            _install_release(options, volume, local, target, report, until)
        except StoreError as error:
            raise BootError(f"cold boot of {options.env} needs the store and it failed: {error}") from None
        marker = _visible_release(volume, options.env_name, target.version, local)
        if marker is None:  # a layer went meanwhile (a gc elsewhere, a damaged volume): once more
            _install_release(options, volume, local, target, report, until)
            marker = local_release(volume, options.env_name, target.version, local)
        if marker is None:
            raise BootError(
                f"release {options.env} {target.version} is still incomplete on {(local or volume).root} "
                "after its install "
                "(another program changed the volume meanwhile?)",
                fix="boot again; if it recurs, run `podenv gc` and check what else writes there.",
            )
    else:
        report.phase("resolve", since)
    # Recency for `podenv gc --keep N`: the volume's release marker's mtime is its last boot.
    with suppress(FileNotFoundError):
        os.utime(volume.release_dir(options.env_name, marker["version"]) / RELEASE_MARKER)
    report.version, report.digest = marker["version"], marker["digest"]
    directory = (local or volume).release_dir(options.env_name, marker["version"])
    code = directory / VIEW_DIRS[CODE_TARGET]
    if not code.is_dir() and options.require_code:
        raise BootError(
            f"release {options.env} {marker['version']} carries no code layer (it was published "
            "before releases carried their handler), and this worker image has no handler of its own",
            fix="publish it again with the pipeline (it adds the code layer) under a new version and "
            "deploy that, or deploy it on a worker image from before podenv 0.2.0.",
        )
    env_prefix = (directory / VIEW_DIRS[ENV_TARGET]).resolve()
    report.env_location = f"{'the local disk' if local else 'the volume'} ({env_prefix})"
    report.phases["total"] = round(time.monotonic() - started, 4)
    ready_code = code if code.is_dir() else None
    return ReadyRelease(directory, env_prefix, marker["version"], marker["digest"], ready_code)
