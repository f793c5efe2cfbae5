"""Releases: assemble the manifest from built layers, publish it, move channel pointers.

Publishing goes blobs first, then the immutable release, then the channel: a reader that
sees a release can always fetch its blobs, and a channel never points at a missing
release. Re-running an interrupted publish completes it; publishing different content
under an existing version is refused before a byte is uploaded.
"""

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podenv import __version__
from podenv.archive import ArchiveInfo
from podenv.bootstrap import needed_bootstrap
from podenv.digests import digest_file
from podenv.envbuild import sbom
from podenv.envspec import EnvSpec
from podenv.errors import AlreadyExistsError, NotFoundError
from podenv.lock import read_plan
from podenv.log import get_logger
from podenv.manifest import (
    LAYER_MEDIA_TYPE,
    SCHEMA_VERSION,
    SHARDED_MEDIA_TYPE,
    Layer,
    Manifest,
    utc_timestamp,
)
from podenv.progress import Progress, human_bytes
from podenv.shards import INDEX_FILE, ShardIndex, layer_blobs, parse_index
from podenv.store import Store

_log = get_logger("release")


def layer_document(
    info: ArchiveInfo, kind: str, name: str, target: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A layer as the manifest records it."""
    document = {
        "kind": kind,
        "name": name,
        "media_type": LAYER_MEDIA_TYPE,
        "digest": info.digest,
        "size": info.size,
        "unpacked_size": info.unpacked_size,
        "files": info.files,
        "target": target,
    }
    document.update(extra or {})
    return document


def sharded_layer_document(index: ShardIndex, kind: str, name: str, target: str) -> dict[str, Any]:
    """A package-sharded layer as the manifest records it: its identity is its index's digest."""
    return {
        "kind": kind,
        "name": name,
        "media_type": SHARDED_MEDIA_TYPE,
        "digest": index.digest,
        "size": index.size,
        "unpacked_size": index.unpacked_size,
        "files": index.files,
        "target": target,
    }


def write_layer_info(path: Path, layer: dict[str, Any], archive: Path) -> None:
    """The build's record of one layer: its manifest entry and where its archive lies, relative
    to the record (the two travel together: through S3 between cluster jobs, each job has them
    side by side under its own directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    where = os.path.relpath(archive.absolute(), path.parent.absolute())
    path.write_text(json.dumps({"layer": layer, "archive": where}, indent=2, sort_keys=True) + "\n")


def read_layer_info(path: Path) -> tuple[dict[str, Any], Path]:
    document = json.loads(path.read_text())
    return document["layer"], path.parent / document["archive"]


def _git_commit(workdir: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _created() -> str:
    """Release time; SOURCE_DATE_EPOCH pins it for reproducible manifests."""
    return utc_timestamp(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())))


def make_manifest(
    spec: EnvSpec, lock_path: Path, layer_infos: list[Path], version: str, workdir: Path
) -> Manifest:
    plan = read_plan(lock_path, spec.pixi_environment, spec.platform)
    layers = [read_layer_info(path)[0] for path in layer_infos]
    document = {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "version": version,
        "created": _created(),
        "builder": {"podenv": __version__, "host": socket.gethostname(), "git_commit": _git_commit(workdir)},
        "inputs": {
            "lock_digest": digest_file(lock_path),
            "env_spec_digest": spec.digest,
            "pixi_environment": spec.pixi_environment,
        },
        "platform": spec.platform,
        "cuda": plan.cuda,
        "layers": layers,
        "bootstrap": {"podenv": needed_bootstrap(layers)},
        "sbom": sbom(plan),
    }
    return Manifest.from_document(document)


@dataclass
class PublishReport:
    name: str
    version: str
    digest: str
    uploaded_blobs: list[str] = field(default_factory=list)
    present_blobs: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    release_created: bool = False
    channel: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _refuse_conflicting_release(store: Store, manifest: Manifest) -> None:
    try:
        existing = store.get_release(manifest.name, manifest.version)
    except NotFoundError:
        return
    if existing != manifest.canonical_bytes():
        raise AlreadyExistsError(
            f"release {manifest.name} {manifest.version} already exists in {store.url} with other content; "
            "published releases are never overwritten: set a new version and publish again."
        )


def _layer_blobs(layer: Layer, archive: Path) -> dict[str, Path]:
    """The blobs of one built layer by digest, the index last: a store that has a layer's
    index has every shard it names."""
    if not layer.sharded:
        return {layer.digest: archive}
    index = parse_index((archive / INDEX_FILE).read_bytes(), layer.digest)
    return layer_blobs(archive, index)


def publish(
    store: Store, manifest: Manifest, archives: dict[str, Path], channel: str | None = None
) -> PublishReport:
    """Upload what the store lacks, then the release, then (if asked) move ``channel`` to it."""
    _refuse_conflicting_release(store, manifest)
    report = PublishReport(manifest.name, manifest.version, manifest.digest)
    for layer in manifest.layers:
        uploaded = 0
        for digest, path in _layer_blobs(layer, archives[layer.digest]).items():
            upload = store.put_blob(path, digest, Progress(f"upload {layer.name}", total=path.stat().st_size))
            (report.uploaded_blobs if upload.uploaded else report.present_blobs).append(digest)
            uploaded += upload.size if upload.uploaded else 0
        report.uploaded_bytes += uploaded
        state = f"uploaded {human_bytes(uploaded)}" if uploaded else "already in the store"
        _log.info(
            f"layer {layer.name}: {state} ({human_bytes(layer.size)}, {layer.digest})",
            extra={"fields": {"layer": layer.name, "digest": layer.digest, "uploaded": upload.uploaded}},
        )
    report.release_created = store.put_release(manifest.name, manifest.version, manifest.canonical_bytes())
    if channel is not None:
        from podenv.channels import promote

        promote(store, manifest.name, manifest.version, channel)
        report.channel = channel
    _log.info(
        f"published {manifest.name} {manifest.version} ({manifest.digest}) to {store.url}: "
        f"{len(report.uploaded_blobs)} layers uploaded ({human_bytes(report.uploaded_bytes)}), "
        f"{len(report.present_blobs)} already there" + (f", channel {channel} moved" if channel else ""),
        extra={"fields": report.to_json()},
    )
    return report
