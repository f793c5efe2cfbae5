"""Helpers for the `podenv boot` tests: releases published with the library, `podenv boot` as
a real process, and checks of what a volume holds."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from podenv.archive import entries_from_tree, pack_tree
from podenv.channels import promote
from podenv.manifest import SCHEMA_VERSION, Layer, Manifest
from podenv.release import layer_document, sharded_layer_document
from podenv.shards import layer_blobs, write_sharded_layer
from podenv.store import blob_key, open_store
from podenv.volume import MARKER

REPOSITORY = Path(__file__).parents[2]
PODENV = [sys.executable, "-m", "podenv.cli"]


# Releases


@dataclass(frozen=True)
class LayerSource:
    """A directory to publish as one layer."""

    name: str
    tree: Path
    kind: str = "env"
    target: str = "env"


@dataclass(frozen=True)
class Published:
    store: str
    manifest: Manifest
    archives: dict[str, Path]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.manifest.layers if layer.name == name)


def manifest_document(
    name: str, version: str, layers: list[dict[str, Any]], schema_version: int = SCHEMA_VERSION
) -> dict[str, Any]:
    """A valid manifest around ``layers`` (the shape of tests/manifests.py, no CUDA)."""
    return {
        "schema_version": schema_version,
        "name": name,
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "builder": {"podenv": "0.1.0", "host": "test-box", "git_commit": None},
        "inputs": {
            "lock_digest": "sha256:" + "1" * 64,
            "env_spec_digest": "sha256:" + "2" * 64,
            "pixi_environment": "worker",
        },
        "platform": "linux-64",
        "cuda": None,
        "layers": layers,
        "sbom": {"conda": [], "pypi": []},
    }


def publish_release(
    store_url: str,
    name: str,
    version: str,
    layers: list[LayerSource],
    workdir: Path,
    channel: str | None = None,
    schema_version: int = SCHEMA_VERSION,
) -> Published:
    """Pack each tree as one tar.zst, upload the blobs, put the release, and move ``channel`` to it."""
    store = open_store(store_url)
    documents, archives = [], {}
    workdir.mkdir(parents=True, exist_ok=True)
    for source in layers:
        archive = workdir / f"{name}-{version}-{source.name}.tar.zst"
        info = pack_tree(source.tree, archive)
        store.put_blob(archive, info.digest)
        extra = None
        if source.kind == "model":
            extra = {"model": {"id": f"podenv/{source.name}", "source": "local", "revision": "r1"}}
        documents.append(layer_document(info, source.kind, source.name, source.target, extra))
        archives[source.name] = archive
    manifest = Manifest.from_document(manifest_document(name, version, documents, schema_version))
    store.put_release(name, version, manifest.canonical_bytes())
    if channel is not None:
        promote(store, name, version, channel)
    return Published(store_url, manifest, archives)


def publish_archive(
    store_url: str,
    name: str,
    version: str,
    archive: Path,
    declared: dict[str, int] | None = None,
    channel: str | None = None,
) -> Published:
    """Publish one ready-made (possibly hostile) tar.zst as the env layer of a release, with the
    digest and size it has and the unpacked bytes and files ``declared`` (default: 1 and 1)."""
    from podenv.archive import ArchiveInfo
    from podenv.digests import digest_file

    store = open_store(store_url)
    digest = digest_file(archive)
    store.put_blob(archive, digest)
    counts = {"unpacked_size": 1, "files": 1, **(declared or {})}
    info = ArchiveInfo(digest, archive.stat().st_size, counts["unpacked_size"], counts["files"])
    manifest = Manifest.from_document(
        manifest_document(name, version, [layer_document(info, "env", "env", "env")])
    )
    store.put_release(name, version, manifest.canonical_bytes())
    if channel is not None:
        promote(store, name, version, channel)
    return Published(store_url, manifest, {"env": archive})


def publish_sharded_release(
    store_url: str, name: str, version: str, tree: Path, package_of: Callable[[str], str], workdir: Path
) -> Published:
    """``tree`` as one package-sharded env layer (``package_of`` names each file's package)."""
    store = open_store(store_url)
    entries = entries_from_tree(tree)
    owners = {entry.name: package_of(entry.name) for entry in entries if entry.kind == "file"}
    output = workdir / f"{name}-{version}-env"
    index = write_sharded_layer(entries, owners, output)
    for digest, path in layer_blobs(output, index).items():
        store.put_blob(path, digest)
    layer = sharded_layer_document(index, "env", "env", "env")
    manifest = Manifest.from_document(manifest_document(name, version, [layer]))
    store.put_release(name, version, manifest.canonical_bytes())
    return Published(store_url, manifest, {"env": output})


def write_small_env(directory: Path, version: str, files: int = 40) -> Path:
    """A tiny env: bin/hello prints its version, VERSION names it, a few data files."""
    (directory / "bin").mkdir(parents=True)
    hello = directory / "bin" / "hello"
    hello.write_text(f"#!/bin/sh\necho hello-from-{version}\n")
    hello.chmod(0o755)
    (directory / "VERSION").write_text(version + "\n")
    (directory / "share").mkdir()
    for index in range(files):
        (directory / "share" / f"data-{index:03d}.txt").write_text(f"{version} {index}\n" * 20)
    return directory


def write_tiny_model(directory: Path) -> Path:
    """A hub-cache layout: models--podenv--tiny/snapshots/r1/config.json and refs/main."""
    repo = directory / "models--podenv--tiny"
    (repo / "snapshots" / "r1").mkdir(parents=True)
    (repo / "snapshots" / "r1" / "config.json").write_text('{"model_type": "tiny"}\n')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("r1")
    return directory


BIG_FILE = "00-big.bin"


def write_big_env(directory: Path, directories: int, per_directory: int, big_size: int) -> int:
    """``directories`` x ``per_directory`` small files under files/dNN/, and one random file
    that sorts first in the archive (so the first part of the download is that one file).
    Returns the number of files."""
    directory.mkdir(parents=True)
    with open(directory / BIG_FILE, "wb") as sink:
        remaining = big_size
        while remaining:
            piece = min(remaining, 16 << 20)
            sink.write(os.urandom(piece))
            remaining -= piece
    for number in range(directories):
        sub = directory / "files" / f"d{number:02d}"
        sub.mkdir(parents=True)
        for index in range(per_directory):
            (sub / f"f{index:04d}.txt").write_bytes(f"{number}-{index}\n".encode() * 8)
    return directories * per_directory + 1


# Running podenv


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any AWS_* or PODENV_* leaking in, plus ``extra``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "PODENV_"))}
    environment.update(extra or {})
    return environment


def boot_argv(
    root: Path,
    env: str | None = None,
    store: str | None = None,
    options: Iterable[str] = (),
    command: list[str] | None = None,
    global_options: Iterable[str] = (),
) -> list[str]:
    argv = [*PODENV, *global_options, "boot", "--root", str(root)]
    if env is not None:
        argv += ["--env", env]
    if store is not None:
        argv += ["--store", store]
    argv += list(options)
    if command is not None:
        argv += ["--exec", "--", *command]
    return argv


def run(
    argv: list[str], environment: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=timeout)


def start(argv: list[str], environment: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# What the volume holds


def reports(root: Path) -> list[dict[str, Any]]:
    texts = [path.read_text() for path in (root / "boot-reports").glob("*.json")]
    # A boot reserves its report's room first: a blank one is a boot that never finished.
    found = [json.loads(text) for text in texts if text.strip()]
    return sorted(found, key=lambda report: report["started"])


def report_of(root: Path, pid: int) -> dict[str, Any]:
    matching = [report for report in reports(root) if report["pid"] == pid]
    assert len(matching) == 1, f"{len(matching)} boot reports from pid {pid}"
    return matching[0]


def count_entries(directory: Path) -> int:
    """Files and links below ``directory`` (not directories, not the layer marker)."""
    count = 0
    pending = [directory]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif not (entry.name == MARKER and Path(entry.path).parent == directory):
                    count += 1
    return count


def complete_layers(root: Path) -> dict[str, dict[str, Any]]:
    """Every entry of <root>/layers, each checked to be a complete layer: its marker names its
    own digest and the file count it records is what the directory holds."""
    layers = {}
    for directory in sorted((root / "layers").iterdir()):
        marker_path = directory / MARKER
        assert marker_path.is_file(), f"{directory} has no marker"
        marker = json.loads(marker_path.read_text())
        assert marker["digest"] == f"sha256:{directory.name}", marker
        assert count_entries(directory) == marker["files"], f"{directory}: file count differs from marker"
        layers[directory.name] = marker
    return layers


def lease_files(root: Path) -> list[str]:
    return sorted(path.name for path in (root / "leases").glob("*.lease"))


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.is_dir() else []


@dataclass
class LayerObserver:
    """Polls <root>/layers from a thread; records every layer directory seen without its marker."""

    root: Path
    interval: float = 0.005
    polls: int = 0
    seen: set[str] = field(default_factory=set)
    unmarked: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "LayerObserver":
        self._thread = threading.Thread(target=self._run, name="layer-observer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        layers = self.root / "layers"
        while not self._stop.is_set():
            try:
                names = os.listdir(layers)
            except FileNotFoundError:
                names = []
            for name in names:
                self.seen.add(name)
                if not (layers / name / MARKER).is_file() and (layers / name).exists():
                    self.unmarked.append(name)
            self.polls += 1
            time.sleep(self.interval)


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, process: subprocess.Popen | None = None
):
    """Poll ``condition`` until it returns something truthy; fail if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the boot ended (rc {process.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_worker(process: subprocess.Popen, program: str, timeout: float = 120) -> None:
    """Until the boot ``process`` has exec'd the worker ``program`` (its in-use file is there
    from the moment the release is known, long before)."""

    def execed() -> bool:
        try:
            return Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[0] == program.encode()
        except OSError:
            return False

    wait_for(execed, timeout, f"the worker {program}", process)


# The pipeline, as test_pipeline.py runs it


# Behind the store's back


def _blob_object(environment: dict[str, str], store_url: str, digest: str) -> tuple[Any, str, str]:
    """A plain boto3 client on the S3 server, and the bucket and key of one blob of the store."""
    import boto3
    from botocore.config import Config

    parsed = urlparse(store_url)
    client = boto3.client(
        "s3",
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required", s3={"addressing_style": "path"}),
    )
    return client, parsed.netloc, f"{parsed.path.strip('/')}/{blob_key(digest)}"


def corrupt_blob(environment: dict[str, str], store_url: str, digest: str) -> str:
    """Flip one byte of a blob in place; returns the digest of what the store holds now."""
    client, bucket, key = _blob_object(environment, store_url, digest)
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) * 3 // 4] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def delete_blob(environment: dict[str, str], store_url: str, digest: str) -> None:
    client, bucket, key = _blob_object(environment, store_url, digest)
    client.delete_object(Bucket=bucket, Key=key)
