"""Deterministic tar.zst writer.

The same tree always gives the same bytes, whoever builds it and whenever: entries are
sorted by name, every mtime is ``ARCHIVE_MTIME``, owners are 0 with no names, modes are
normalised to 0o755/0o644, and hard links are stored as plain files (whether a build
box hardlinked two files from its package cache is not a property of the environment).
zstd runs multi-threaded, whose output does not depend on the number of threads.
"""

import hashlib
import io
import itertools
import os
import stat
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, cast

import zstandard

from podenv.digests import format_digest
from podenv.errors import PodenvError
from podenv.progress import Progress

ARCHIVE_MTIME = 315532800  # 1980-01-01T00:00:00Z, the ZIP epoch wheels use too
DEFAULT_LEVEL = 3
_COPY_BUFFER = 1 << 20

EntryKind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class ArchiveEntry:
    """One member to write: a file from ``source`` or ``data``, a directory, or a symlink."""

    name: str
    kind: EntryKind
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False
    link_target: str | None = None


@dataclass(frozen=True)
class ArchiveInfo:
    digest: str
    size: int
    unpacked_size: int
    files: int


def entries_from_tree(root: Path) -> list[ArchiveEntry]:
    """Every file, directory and symlink below ``root``, named relative to it."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries.append(ArchiveEntry(relative, "symlink", link_target=os.readlink(path)))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(ArchiveEntry(relative, "dir"))
            elif stat.S_ISREG(info.st_mode):
                executable = bool(info.st_mode & 0o111)
                entries.append(ArchiveEntry(relative, "file", source=path, executable=executable))
            else:
                raise PodenvError(
                    f"cannot pack '{path}': only files, directories and symlinks go into a layer."
                )
    return entries


class _HashingWriter:
    """File-like sink that hashes and counts what passes through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()


def _tarinfo(entry: ArchiveEntry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "symlink":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.link_target or ""
    else:
        info.type, info.size = tarfile.REGTYPE, size
        info.mode = 0o755 if entry.executable else 0o644
    return info


def _add_entry(tar: tarfile.TarFile, entry: ArchiveEntry) -> int:
    """Write one entry; returns the bytes of file content it added."""
    if entry.kind != "file":
        tar.addfile(_tarinfo(entry, 0))
        return 0
    if entry.data is not None:
        tar.addfile(_tarinfo(entry, len(entry.data)), io.BytesIO(entry.data))
        return len(entry.data)
    assert entry.source is not None
    with open(entry.source, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        tar.addfile(_tarinfo(entry, size), source)
    return size


def _sorted_unique(entries: Iterable[ArchiveEntry]) -> list[ArchiveEntry]:
    ordered = sorted(entries, key=lambda entry: entry.name)
    for previous, current in itertools.pairwise(ordered):
        if previous.name == current.name:
            raise PodenvError(f"two archive entries are named '{current.name}'; names must be unique.")
    return ordered


def write_archive(
    entries: Iterable[ArchiveEntry],
    output: Path,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int = 0,
    progress: Progress | None = None,
    durable: bool = True,
) -> ArchiveInfo:
    """Write ``entries`` as a deterministic tar.zst at ``output``.

    The archive is written to a uniquely named temporary file beside ``output`` and moved
    into place only when complete (and, if ``durable``, on disk), so ``output`` is either
    absent or whole. ``threads=0`` uses every core; any value of 1 or more gives the same bytes.
    """
    ordered = _sorted_unique(entries)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{uuid.uuid4().hex}.tmp")
    compressor = zstandard.ZstdCompressor(
        level=level, threads=threads or (os.cpu_count() or 1), write_checksum=True
    )
    unpacked = 0
    try:
        with open(temporary, "wb") as raw:
            sink = _HashingWriter(raw)
            with (
                compressor.stream_writer(cast(BinaryIO, sink), closefd=False) as compressed,
                # Plain "w" writes each header and block straight into zstd, which buffers;
                # the stream mode's own buffer costs a copy of itself on every write.
                tarfile.open(  # type: ignore[call-overload]  # typeshed lacks TarFile's copybufsize
                    fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFFER
                ) as tar,
            ):
                for entry in ordered:
                    added = _add_entry(tar, entry)
                    unpacked += added
                    if progress is not None:
                        progress.update(added)
            raw.flush()
            if durable:
                os.fsync(raw.fileno())
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    files = sum(1 for entry in ordered if entry.kind != "dir")
    return ArchiveInfo(format_digest(sink.hasher.hexdigest()), sink.size, unpacked, files)


def pack_tree(
    root: Path,
    output: Path,
    *,
    level: int = DEFAULT_LEVEL,
    threads: int = 0,
    progress: Progress | None = None,
) -> ArchiveInfo:
    """Pack every file, directory and symlink below ``root`` into ``output``."""
    entries = entries_from_tree(root)
    return write_archive(entries, output, level=level, threads=threads, progress=progress)
