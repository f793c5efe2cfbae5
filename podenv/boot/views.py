"""The release directory: its manifest, the env link, and one cache view per target."""

import os
import time
from pathlib import Path
from typing import Any

from podenv.layout import ENV_TARGET, HF_HUB_TARGET, RELEASE_FILE, VIEW_DIRS
from podenv.manifest import Manifest
from podenv.volume import MARKER, RELEASE_MARKER, Volume, write_marker


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def build_view(volume: Volume, manifest: Manifest, staging: Path) -> None:
    """Write the release directory into ``staging`` (renamed into place by the caller)."""
    staging.mkdir()
    (staging / RELEASE_FILE).write_bytes(manifest.canonical_bytes())
    for layer in manifest.layers:
        layer_dir = volume.layer_dir(layer.digest)
        view = staging / VIEW_DIRS[layer.target]
        if layer.target == ENV_TARGET:
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
    marker.update(layers=[layer.digest for layer in manifest.layers], installed_at=time.time())
    write_marker(staging, marker, RELEASE_MARKER)
