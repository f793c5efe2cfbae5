"""What the volume already holds: complete releases, found without the store."""

from typing import TYPE_CHECKING, Any

from podenv.boot.options import BootOptions
from podenv.volume import RELEASE_MARKER, Volume, layer_is_installed, read_marker

if TYPE_CHECKING:
    from podenv.manifest import Manifest
    from podenv.resolve import Target


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


def warmed_manifest(volume: Volume, name: str, target: "Target") -> "Manifest | None":
    """The manifest `podenv warm` left on the volume, if its bytes have the pinned digest.

    Anything on the volume is untrusted: without a digest to check against, or with other
    bytes, it is not used and the store is asked instead."""
    from podenv.digests import digest_bytes
    from podenv.manifest import Manifest

    if target.digest is None:
        return None
    try:
        data = volume.manifest_path(name, target.version).read_bytes()
    except OSError:
        return None
    if digest_bytes(data) != target.digest:
        return None
    return Manifest.from_bytes(data)
