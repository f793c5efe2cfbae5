"""Room on the volume: refuse a cold boot before its first byte if the layers cannot fit."""

import os
from collections.abc import Sequence

from podenv.errors import BootError
from podenv.manifest import Layer
from podenv.progress import human_bytes
from podenv.volume import Volume, used_bytes

SPACE_MARGIN = 256 << 20


def space_needed(missing: Sequence[Layer], keep_blobs: bool) -> int:
    """Bytes the missing layers take on the volume once installed (and their blobs, if kept)."""
    return sum(layer.unpacked_size + (layer.size if keep_blobs else 0) for layer in missing)


def space_free(volume: Volume, quota: int | None) -> int:
    """Bytes podenv may still write: the filesystem's free space, or less under a quota."""
    filesystem = os.statvfs(volume.root)
    free = filesystem.f_bavail * filesystem.f_frsize
    if quota is not None:
        free = min(free, max(quota - used_bytes(volume), 0))
    return free


def check_space(
    volume: Volume, missing: Sequence[Layer], quota: int | None, keep_blobs: bool = False
) -> None:
    """Refuse before the first byte is fetched if the layers cannot fit."""
    needed = space_needed(missing, keep_blobs)
    if not needed:
        return
    free = space_free(volume, quota)
    if needed + SPACE_MARGIN > free:
        raise BootError(
            f"not enough space on {volume.root}: the release needs {human_bytes(needed)} "
            f"(+{human_bytes(SPACE_MARGIN)} margin) but {human_bytes(free)} is free",
            fix="grow the volume or run `podenv gc`.",
        )
