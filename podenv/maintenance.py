"""What is on a volume (`podenv status`) and freeing what no recent release uses (`podenv gc`)."""

from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podenv.volume import (
    RELEASE_MARKER,
    Volume,
    clear_stale_in_use,
    discard,
    layers_being_installed,
    live_leases,
    read_json_document,
    read_marker,
    reclaim_dead,
    releases_in_use,
    tree_bytes,
)


@dataclass(frozen=True)
class InstalledRelease:
    name: str
    version: str
    digest: str
    layers: list[str]
    last_used: float
    directory: Path


def installed_releases(volume: Volume) -> list[InstalledRelease]:
    """Every release view on the volume, most recently used first."""
    found = []
    for marker_path in (volume.root / "releases").glob(f"*/*/{RELEASE_MARKER}"):
        marker = read_marker(marker_path.parent, RELEASE_MARKER)
        if marker is None:
            continue
        found.append(
            InstalledRelease(
                marker["name"],
                marker["version"],
                marker["digest"],
                marker["layers"],
                marker_path.stat().st_mtime,
                marker_path.parent,
            )
        )
    return sorted(found, key=lambda release: release.last_used, reverse=True)


def installed_layers(volume: Volume) -> dict[str, dict[str, Any]]:
    layers = {}
    for directory in volume.layer_dirs():
        marker = read_marker(directory)
        if marker is not None:
            layers[marker["digest"]] = {**marker, "path": str(directory)}
    return layers


def recent_reports(volume: Volume, count: int = 5) -> list[dict[str, Any]]:
    """The newest readable reports (names start with their time); garbled ones are skipped."""
    paths = sorted(volume.reports.glob("*.json"), key=lambda path: path.name, reverse=True)
    found = (read_json_document(path) for path in paths)
    return [report for report in found if report is not None][:count]


def status(volume: Volume, lease_timeout: float) -> dict[str, Any]:
    in_use = releases_in_use(volume, lease_timeout)
    return {
        "root": str(volume.root),
        "releases": [
            {
                "name": r.name,
                "version": r.version,
                "digest": r.digest,
                "layers": len(r.layers),
                "last_used": r.last_used,
                "in_use": (r.name, r.version) in in_use,
            }
            for r in installed_releases(volume)
        ],
        "layers": list(installed_layers(volume).values()),
        "leases": [
            {"layer": digest, "age_s": round(age, 1), "owner": owner}
            for digest, age, owner in live_leases(volume, lease_timeout)
        ],
        "last_boots": recent_reports(volume),
    }


@dataclass
class GcResult:
    kept_releases: list[str] = field(default_factory=list)
    removed_releases: list[str] = field(default_factory=list)
    removed_layers: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def gc(volume: Volume, keep: int, lease_timeout: float) -> GcResult:
    """Remove all but the ``keep`` most recently used releases, and layers nothing kept uses.

    A release a running worker uses (a fresh in-use file) is kept whatever its age, and a
    layer under a live lease is never removed: its owner may be installing or using it.
    """
    result = GcResult()
    # The claims first, in this order, then what is installed: a boot takes its in-use claim
    # before it drops its installing one, so whichever moment gc reads them it sees one of the
    # two, and every release or layer it lists was published before it read them.
    # What a cold boot elsewhere is installing, or will install next: never pulled from under it.
    protected = layers_being_installed(volume, lease_timeout)
    in_use = releases_in_use(volume, lease_timeout)
    # A layer's lease is named <hex>; a blob being fetched into the cache, <hex>.blob
    # (podenv.blobcache): both protect that digest.
    protected |= {f"sha256:{name.removesuffix('.blob')}" for name, _, _ in live_leases(volume, lease_timeout)}
    releases = installed_releases(volume)
    kept = [r for index, r in enumerate(releases) if index < keep or (r.name, r.version) in in_use]
    dropped = [release for release in releases if release not in kept]
    protected |= {digest for release in kept for digest in release.layers}
    for release in dropped:
        discard(release.directory)
        result.removed_releases.append(f"{release.name} {release.version}")
    result.kept_releases = [f"{release.name} {release.version}" for release in kept]
    for digest, marker in installed_layers(volume).items():
        if digest not in protected:
            discard(Path(marker["path"]))
            result.removed_layers.append(digest)
            result.freed_bytes += marker.get("bytes", 0)
    result.freed_bytes += _remove_garbled(volume, protected, in_use)
    result.freed_bytes += _prune_blobs(volume, protected)
    result.freed_bytes += reclaim_dead(volume, lease_timeout)
    for path in volume.leases.glob(".stale.*") if volume.leases.is_dir() else []:
        path.unlink(missing_ok=True)  # leases moved aside when taken over
    clear_stale_in_use(volume, lease_timeout)
    return result


def _remove_garbled(volume: Volume, protected: set[str], in_use: set[tuple[str, str]]) -> int:
    """Layer and release directories whose marker is missing or garbled: everything podenv
    publishes has its marker inside, so these are damage, used by no boot (which reads them
    as absent). Protected layers and releases in use are left to the next boot to repair."""
    freed = 0
    for directory in volume.layer_dirs():
        if read_marker(directory) is None and f"sha256:{directory.name}" not in protected:
            freed += tree_bytes(directory)
            discard(directory)
    for directory in (volume.root / "releases").glob("*/*"):
        name, version = directory.parent.name, directory.name
        if read_marker(directory, RELEASE_MARKER) is None and (name, version) not in in_use:
            discard(directory)
    return freed


def _prune_blobs(volume: Volume, protected: set[str]) -> int:
    """Kept blobs of layers no kept release uses (a partial download of a live boot is kept)."""
    freed = 0
    for path in volume.blobs.iterdir() if volume.blobs.is_dir() else []:
        if path.name.startswith(".") or f"sha256:{path.name}" in protected:
            continue
        with suppress(OSError):
            freed += path.stat().st_size
            path.unlink()
    return freed
