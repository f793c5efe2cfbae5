"""Room on the volume: refuse a cold boot before its first byte if the layers cannot fit."""

import os
from collections.abc import Sequence

from podenv.errors import BootError
from podenv.manifest import Layer
from podenv.progress import human_bytes
from podenv.volume import Volume, used_bytes

SPACE_MARGIN = 256 << 20


def space_needed(missing: Sequence[Layer], keep_blobs: bool, blobs: Sequence[Layer] = ()) -> int:
    """Bytes the missing layers take once installed (and their blobs, if kept: a sharded
    layer's always are, the volume's blob cache is where its shards live), plus the
    compressed ``blobs`` to cache (placement=local: the env's blob on the volume)."""
    unpacked = sum(
        layer.unpacked_size + (layer.size if keep_blobs or layer.sharded else 0) for layer in missing
    )
    return unpacked + sum(layer.size for layer in blobs)


def space_free(volume: Volume, quota: int | None) -> int:
    """Bytes podenv may still write: the filesystem's free space, or less under a quota."""
    filesystem = os.statvfs(volume.root)
    free = filesystem.f_bavail * filesystem.f_frsize
    if quota is not None:
        free = min(free, max(quota - used_bytes(volume), 0))
    return free


def check_space(
    volume: Volume,
    missing: Sequence[Layer],
    quota: int | None,
    keep_blobs: bool = False,
    blobs: Sequence[Layer] = (),
    local: bool = False,
) -> None:
    """Refuse before the first byte is fetched if the layers cannot fit (``local``: the
    worker's own disk, for placement=local's env; the volume otherwise)."""
    needed = space_needed(missing, keep_blobs, blobs)
    if not needed:
        return
    volume.root.mkdir(parents=True, exist_ok=True)
    free = space_free(volume, None if local else quota)
    if needed + SPACE_MARGIN > free:
        where = f"the local disk at {volume.root}" if local else str(volume.root)
        fix = (
            "give the worker a larger container disk (RunPod: containerDiskInGb) "
            "or set PODENV_PLACEMENT=volume."
            if local
            else "grow the volume or run `podenv gc`."
        )
        raise BootError(
            f"not enough space on {where}: the release needs {human_bytes(needed)} "
            f"(+{human_bytes(SPACE_MARGIN)} margin) but {human_bytes(free)} is free",
            fix=fix,
        )
