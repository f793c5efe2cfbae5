"""The release directory: its manifest, the env link, the code link (the handler's PYTHONPATH),
and one cache view per model target."""

import os
import time
from pathlib import Path
from typing import Any

from podenv.layout import CODE_TARGET, ENV_TARGET, HF_HUB_TARGET, RELEASE_FILE, VIEW_DIRS
from podenv.manifest import Manifest
from podenv.volume import MARKER, RELEASE_MARKER, Volume, write_marker


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def build_view(
    volume: Volume,
    manifest: Manifest,
    staging: Path,
    env_home: Volume | None = None,
    placement: str = "volume",
) -> None:
    """Write the release directory into ``staging`` (renamed into place by the caller).

    Model layers are on ``volume``; env layers on the volume too with placement=volume, on
    ``env_home`` (the local disk's root) with placement=local. Placement local writes two views:
    the worker's, on its disk, with ``env_home``; and the volume's record (``env_home`` None: no
    env link) that tells `podenv gc` which model layers and blobs the release needs."""
    if placement == "volume":
        env_home = volume
    staging.mkdir()
    (staging / RELEASE_FILE).write_bytes(manifest.canonical_bytes())
    env_layers = [layer.digest for layer in manifest.layers if layer.target == ENV_TARGET]
    layers = [layer for layer in manifest.layers if layer.target != ENV_TARGET or env_home is not None]
    for layer in layers:
        view = staging / VIEW_DIRS[layer.target]
        if layer.target == ENV_TARGET:
            assert env_home is not None
            _link(view, env_home.layer_dir(layer.digest))
            continue
        layer_dir = volume.layer_dir(layer.digest)
        if layer.target == CODE_TARGET:
            _link(view, layer_dir)
        elif layer.target == HF_HUB_TARGET:
            for entry in sorted(layer_dir.iterdir()):
                if entry.name != MARKER:
                    _link(view / entry.name, entry)
        else:
            for path in sorted(layer_dir.rglob("*")):
                if path.is_file() and path.name != MARKER:
                    _link(view / path.relative_to(layer_dir), path)
    marker: dict[str, Any] = {"name": manifest.name, "version": manifest.version, "digest": manifest.digest}
    marker.update(layers=[layer.digest for layer in layers], installed_at=time.time(), placement=placement)
    if placement == "local":
        marker.update(local_layers=env_layers if env_home is not None else [], blobs=env_layers)
    write_marker(staging, marker, RELEASE_MARKER)
