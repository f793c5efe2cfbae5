"""Small file helpers shared by the archive, the stores, the digests and the boot."""

from collections.abc import Iterator
from pathlib import Path

CHUNK_SIZE = 1 << 20
# Filesystems on the machine's own disk or memory: a file create costs no round trip.
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "tmpfs", "ramfs", "overlay"}
)
# Writer threads per layer on a network filesystem, where each create is a round trip.
NETWORK_WRITERS = 16


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the filesystem holding ``path``, from /proc/self/mounts;
    ("", "unknown") where that cannot be read."""
    best = ("", "unknown")
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return best
    resolved = str(path.resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, fields[2])
    return best


def file_writers(path: Path, requested: int | None) -> int:
    """Writer threads for files created below ``path``: ``requested`` if set; else none (the
    reading thread writes) on a local disk, where threads creating files in one directory
    only contend for its lock, and ``NETWORK_WRITERS`` elsewhere (a network volume)."""
    if requested is not None:
        return requested
    return 0 if mount_of(path)[1] in LOCAL_FILESYSTEMS else NETWORK_WRITERS


def read_file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk
