"""What the volume already holds: complete releases, found without the store."""

from typing import Any

from podenv.boot.options import BootOptions
from podenv.volume import RELEASE_MARKER, Volume, layer_is_installed, read_marker


def local_release(volume: Volume, name: str, version: str) -> dict[str, Any] | None:
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
        marker = local_release(volume, name, directory.name)
        if marker is not None and marker["digest"] == digest:
            return marker
    return None


def pinned_warm(options: BootOptions, volume: Volume) -> dict[str, Any] | None:
    """The pinned release's marker if it is complete on the volume (no pin: None)."""
    if options.version:
        marker = local_release(volume, options.env_name, options.version)
        if marker is not None and (options.digest is None or marker["digest"] == options.digest):
            return marker
        return None
    if options.digest:
        return _local_release_by_digest(volume, options.env_name, options.digest)
    return None
