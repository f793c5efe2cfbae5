"""What the volume (and, with placement=local, the worker's disk) already holds: complete
releases, found without the store."""

from typing import TYPE_CHECKING, Any

from podenv.boot.options import BootOptions
from podenv.volume import RELEASE_MARKER, Volume, layer_is_installed, read_marker

if TYPE_CHECKING:
    from podenv.manifest import Manifest
    from podenv.resolve import Target


def local_release(
    volume: Volume, name: str, version: str, local: Volume | None = None
) -> dict[str, Any] | None:
    """The installed release's marker, if the release and every layer it names are complete.

    With ``local`` (placement=local) the release's view is on the local disk, its env layers
    there too (the marker's ``local_layers``) and its model layers on the volume."""
    views = local or volume
    marker = read_marker(views.release_dir(name, version), RELEASE_MARKER)
    if marker is None or marker.get("placement", "volume") != ("local" if local else "volume"):
        return None
    on_local = set(marker.get("local_layers", []))
    homes = [local if digest in on_local and local else volume for digest in marker["layers"]]
    if all(layer_is_installed(home, digest) for home, digest in zip(homes, marker["layers"], strict=True)):
        return marker
    return None


def _local_release_by_digest(
    volume: Volume, name: str, digest: str, local: Volume | None
) -> dict[str, Any] | None:
    releases = (local or volume).root / "releases" / name
    for directory in sorted(releases.glob("*")) if releases.is_dir() else []:
        marker = local_release(volume, name, directory.name, local)
        if marker is not None and marker["digest"] == digest:
            return marker
    return None


def pinned_warm(options: BootOptions, volume: Volume, local: Volume | None = None) -> dict[str, Any] | None:
    """The pinned release's marker if it is complete on the volume (no pin: None)."""
    if options.version:
        marker = local_release(volume, options.env_name, options.version, local)
        if marker is not None and (options.digest is None or marker["digest"] == options.digest):
            return marker
        return None
    if options.digest:
        return _local_release_by_digest(volume, options.env_name, options.digest, local)
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
