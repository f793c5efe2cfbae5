"""Streaming, verifying, parallel extraction of tar.zst layers.

Compressed bytes arrive in order (from a file or from parallel ranged GETs), are hashed
as they pass, decompressed and parsed as a tar stream; file contents are handed to a pool
of writer threads, because on network volumes (MooseFS on RunPod) creating many small
files one at a time is several times slower than creating them in parallel.

Every member is checked before anything is written for it: absolute names, ``..``,
links that resolve outside the target, members below a symlink, duplicates, devices and
fifos are refused with the member's name. Files are created with ``O_EXCL|O_NOFOLLOW``
so that nothing is ever written through a link. On any error, including a digest that
does not match, the target directory is removed: the caller sees all or nothing.

The archive is untrusted until its digest is checked, which can only happen at its end, so
what it may cost is bounded while it streams: the caller's declared bytes and files are
hard limits checked before each member is written, extended (PAX) and GNU long-name
headers are refused above ``HEADER_LIMIT`` before tarfile reads them into memory, and
global and sparse headers (which podenv never writes) are refused outright.
"""

import hashlib
import os
import queue
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import zstandard

from podenv.archive.shard_members import ByteSource, iter_files
from podenv.digests import format_digest
from podenv.errors import IntegrityError, PodenvError, UnsafeArchiveError
from podenv.fileio import read_file_chunks
from podenv.progress import Progress

DEFAULT_WRITERS = 16
READ_SIZE = 1 << 20
# Files up to this size are read whole and written by the pool; larger ones are streamed.
SMALL_FILE_LIMIT = 8 << 20
# tarfile copies its buffer on every read: small reads from a 64 KiB buffer cost least.
_TAR_BUFFER = 64 << 10
_DECOMPRESSED_QUEUE = 16
# Upper bound on file contents held in memory while waiting for a writer.
IN_FLIGHT_LIMIT = 256 << 20
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Largest extended header read into memory: names and link targets are at most PATH_MAX.
HEADER_LIMIT = 64 << 10
# Directories are not declared by a manifest; a layer may hold this many beyond its files.
DIRECTORY_ALLOWANCE = 65536


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | memoryview: ...


@dataclass(frozen=True)
class Limits:
    """What an archive may hold, from its manifest: more is refused while extracting."""

    bytes: int | None = None
    files: int | None = None


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses oversized and never-written header kinds before tarfile buffers them whole."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XGLTYPE, tarfile.GNUTYPE_SPARSE):
            raise UnsafeArchiveError(
                f"archive member '{self.name}' is a global or sparse header, which layers never hold; "
                "refusing to extract."
            )
        extended = (
            tarfile.XHDTYPE,
            tarfile.SOLARIS_XHDTYPE,
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
        )
        if self.type in extended and self.size > HEADER_LIMIT:
            raise UnsafeArchiveError(
                f"archive has an extended header of {self.size} bytes (at most {HEADER_LIMIT} are read); "
                "refusing to extract."
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]  # tarfile's private hook, untyped


@dataclass(frozen=True)
class ExtractResult:
    digest: str
    size: int
    files: int
    bytes_written: int


class _FrameWalker:
    """Follows the zstd frame structure (headers and block sizes only) of the bytes that pass,
    so that input ending inside a frame (a truncated archive) can be told from a whole one:
    the zstandard stream reader reports neither a missing end nor a missing checksum."""

    _ZSTD_MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._field = bytearray()
        self._skip = 0
        self._checksum = False
        self._broken = False
        self.frames = 0

    @property
    def complete(self) -> bool:
        at_boundary = self._state == "magic" and not self._field and not self._skip
        return not self._broken and at_boundary and self.frames > 0

    def feed(self, data: bytes) -> None:
        position, end = 0, len(data)
        while position < end and not self._broken:
            if self._skip:
                step = min(self._skip, end - position)
                self._skip -= step
                position += step
                continue
            take = min(self._need - len(self._field), end - position)
            self._field += data[position : position + take]
            position += take
            if len(self._field) == self._need:
                value = int.from_bytes(self._field, "little")
                self._field = bytearray()
                self._advance(value)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _advance(self, value: int) -> None:
        if self._state == "magic":
            if value == self._ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._expect("skippable", 4)
            else:
                self._broken = True  # the decompressor reports it
        elif self._state == "skippable":
            self._skip = value
            self.frames += 1
            self._expect("magic", 4)
        elif self._state == "descriptor":
            single_segment = bool(value & 0x20)
            self._checksum = bool(value & 0x04)
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[value & 3]
            rest += (1 if single_segment else 0, 2, 4, 8)[value >> 6]
            self._expect("header", rest) if rest else self._expect("block", 3)
        elif self._state == "header":
            self._expect("block", 3)
        elif self._state == "block":
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                self._broken = True
                return
            self._skip = 1 if kind == 1 else size
            if not value & 1:
                self._expect("block", 3)
            elif self._checksum:
                self._expect("checksum", 4)
            else:
                self.frames += 1
                self._expect("magic", 4)
        elif self._state == "checksum":
            self.frames += 1
            self._expect("magic", 4)


class _HashingChunkReader:
    """A ``read(size)`` view of an iterator of byte chunks that hashes every byte it pulls."""

    def __init__(self, chunks: Iterable[bytes], progress: Progress | None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")
        self._progress = progress
        self.hasher = hashlib.sha256()
        self.size = 0
        self.frames = _FrameWalker()

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        while chunk is not None and not chunk:
            chunk = next(self._chunks, None)  # an empty chunk is not the end of the stream
        if chunk is None:
            return False
        self.frames.feed(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)
        if self._progress is not None:
            self._progress.update(len(chunk))
        self._pending = memoryview(chunk)
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [bytes(self._pending)]
            while self._pull():
                parts.append(bytes(self._pending))
            self._pending = memoryview(b"")
            return b"".join(parts)
        if not self._pending and not self._pull():
            return b""
        piece, self._pending = self._pending[:size], self._pending[size:]
        return bytes(piece)

    def drain(self) -> None:
        while self._pull():
            pass
        self._pending = memoryview(b"")

    @property
    def digest(self) -> str:
        return format_digest(self.hasher.hexdigest())


class _ByteBudget:
    """Blocks the reader while too many file bytes wait for a writer thread."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = limit
        self._condition = threading.Condition()

    def acquire(self, count: int) -> int:
        count = min(count, self._limit)
        with self._condition:
            self._condition.wait_for(lambda: self._free >= count)
            self._free -= count
        return count

    def release(self, count: int) -> None:
        with self._condition:
            self._free += count
            self._condition.notify_all()


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's path relative to the target, or an error if it could leave it."""
    if "\0" in member.name:
        raise UnsafeArchiveError(
            f"archive member {member.name!r} has a NUL byte in its name; refusing to extract."
        )
    if member.name.startswith("/"):
        raise UnsafeArchiveError(f"archive member '{member.name}' has an absolute path; refusing to extract.")
    parts = [part for part in member.name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member '{member.name}' contains '..'; refusing to extract.")
    return "/".join(parts)


def _write_whole(path: Path, data: bytes | memoryview, mode: int) -> None:
    descriptor = os.open(path, _CREATE_FLAGS, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


class _Extraction:
    """State of one extraction: what exists in the target, and the writes in flight."""

    def __init__(self, target: Path, writers: int, limits: Limits, label: str) -> None:
        self.target = target
        self._limits = limits
        self._label = label
        # No writer threads: on a local disk, threads creating files in one directory contend
        # for its lock (the kernel spins: system CPU, no gain); on a network volume they pay.
        self._inline = writers == 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="podenv-write")
        self._budget = _ByteBudget(IN_FLIGHT_LIMIT)
        self._writes: dict[str, Future[None]] = {}
        self._failure: BaseException | None = None
        self._directories = {""}
        self._symlinks: set[str] = set()
        self._files: set[str] = set()
        self.file_count = 0
        self.bytes_written = 0

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self._failure is not None:
            raise self._failure
        name = _member_name(member)
        if member.isdir():
            self._check_new(name, member, directory=True)
            self._ensure_directory(name, member)
            return
        self._check_new(name, member, directory=False)
        self._check_limits(member)
        self._ensure_directory(name.rpartition("/")[0], member)
        if member.isreg():
            content = tar.extractfile(member)
            assert content is not None
            self._add_file(content, member, name)
        elif member.issym():
            self._check_link(member)
            os.symlink(member.linkname, self.target / name)
            self._symlinks.add(name)
        elif member.islnk():
            self._add_hardlink(member, name)
        else:
            raise UnsafeArchiveError(
                f"archive member '{member.name}' is a device, fifo or other special file; "
                "refusing to extract."
            )
        self.file_count += 1

    def _check_limits(self, member: tarfile.TarInfo) -> None:
        declared = self._limits
        size = member.size if member.isreg() else 0
        if declared.files is not None and self.file_count + 1 > declared.files:
            raise UnsafeArchiveError(
                f"{self._label} holds more than the {declared.files} files it declares "
                f"(at '{member.name}'); refusing to extract."
            )
        if declared.bytes is not None and self.bytes_written + size > declared.bytes:
            raise UnsafeArchiveError(
                f"{self._label} holds more than the {declared.bytes} bytes it declares "
                f"(at '{member.name}'); refusing to extract."
            )

    def _check_new(self, name: str, member: tarfile.TarInfo, directory: bool) -> None:
        taken = name in self._files or name in self._symlinks
        if not name or taken or (not directory and name in self._directories):
            raise UnsafeArchiveError(f"archive member '{member.name}' is a duplicate; refusing to extract.")

    def _ensure_directory(self, name: str, member: tarfile.TarInfo) -> None:
        if name in self._directories:
            return
        if name in self._symlinks or name in self._files:
            raise UnsafeArchiveError(
                f"archive member '{member.name}' lies below a symlink or file; refusing to extract."
            )
        self._ensure_directory(name.rpartition("/")[0], member)
        files = self._limits.files
        if files is not None and len(self._directories) > files + DIRECTORY_ALLOWANCE:
            raise UnsafeArchiveError(
                f"{self._label} holds more than {DIRECTORY_ALLOWANCE} directories beyond the "
                f"{files} files it declares (at '{member.name}'); refusing to extract."
            )
        (self.target / name).mkdir()
        self._directories.add(name)

    def _check_link(self, member: tarfile.TarInfo) -> None:
        try:
            tarfile.data_filter(member, str(self.target))
        except tarfile.FilterError as error:
            raise UnsafeArchiveError(
                f"archive member '{member.name}' links outside the target ({error}); refusing to extract."
            ) from None

    def _add_hardlink(self, member: tarfile.TarInfo, name: str) -> None:
        self._check_link(member)
        source = "/".join(part for part in member.linkname.split("/") if part not in ("", "."))
        if source not in self._files:
            raise UnsafeArchiveError(
                f"archive member '{member.name}' is a hard link to '{member.linkname}', "
                "which is not a file earlier in the archive; refusing to extract."
            )
        pending = self._writes.get(source)
        if pending is not None:
            pending.result()
        os.link(self.target / source, self.target / name)
        self._files.add(name)

    def _add_file(self, content: "_Readable", member: tarfile.TarInfo, name: str) -> None:
        mode = 0o755 if member.mode & 0o111 else 0o644
        path = self.target / name
        self._files.add(name)
        self.bytes_written += member.size
        if member.size > SMALL_FILE_LIMIT:
            with os.fdopen(os.open(path, _CREATE_FLAGS, mode), "wb") as stream:
                while piece := content.read(READ_SIZE):
                    stream.write(piece)
            return
        data = content.read()
        if self._inline:
            _write_whole(path, data, mode)
            return
        reserved = self._budget.acquire(len(data))
        future = self._pool.submit(_write_whole, path, data, mode)
        future.add_done_callback(lambda done: self._finished(done, reserved))
        self._writes[name] = future

    def _finished(self, future: Future[None], reserved: int) -> None:
        self._budget.release(reserved)
        if future.cancelled():
            return  # abandoned after an earlier failure, which is the one reported
        error = future.exception()
        if error is not None and self._failure is None:
            self._failure = error

    def finish(self) -> None:
        self._pool.shutdown(wait=True)
        if self._failure is not None:
            raise self._failure
        # A link checked when it was made can escape through a link made after it
        # ('x -> d/../outside' before 'd -> .'): check them all once every link exists.
        root = os.path.realpath(self.target)
        for name in sorted(self._symlinks):
            resolved = os.path.realpath(self.target / name)
            if os.path.commonpath([resolved, root]) != root:
                raise UnsafeArchiveError(
                    f"archive member '{name}' links outside the target through another link "
                    f"('{resolved}'); refusing to extract."
                )

    def abandon(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Decompressor:
    """Decompresses on its own thread, so that zstd (which releases the GIL) overlaps the
    tar parsing and file dispatch of the reading thread; ``read`` hands out the result."""

    _END = object()

    def __init__(self, source: _HashingChunkReader) -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_DECOMPRESSED_QUEUE)
        self._stopping = threading.Event()
        self._pending = memoryview(b"")
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="podenv-zstd", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            stream = zstandard.ZstdDecompressor().stream_reader(
                cast(BinaryIO, self._source), read_size=READ_SIZE, read_across_frames=True
            )
            while not self._stopping.is_set() and (chunk := stream.read(READ_SIZE)):
                self._put(chunk)
            if not self._stopping.is_set() and not self._source.frames.complete:
                raise zstandard.ZstdError("the data ends inside a zstd frame (truncated)")
        except BaseException as error:  # handed to the reading thread, which raises it
            self._put(error)
        self._put(self._END)

    def _put(self, item: object) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            if self._finished:
                return b""
            item = self._queue.get()
            if item is self._END:
                self._finished = True
                return b""
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            assert isinstance(item, bytes)
            if size < 0 or size >= len(item):
                return item  # the whole chunk, without a copy
            self._pending = memoryview(item)
        if size < 0:
            size = len(self._pending)
        piece, self._pending = self._pending[:size], self._pending[size:]
        return bytes(piece)

    def stop(self) -> None:
        """Stop decompressing; the source can then be drained by the caller's thread."""
        self._stopping.set()
        self._thread.join()


def _read_members(source: _HashingChunkReader, extraction: _Extraction) -> None:
    decompressed = _Decompressor(source)
    try:
        with tarfile.open(
            fileobj=cast(BinaryIO, decompressed), mode="r|", bufsize=_TAR_BUFFER, tarinfo=_BoundedTarInfo
        ) as tar:
            for member in tar:
                extraction.add(tar, member)
        while decompressed.read():
            pass  # the end-of-archive padding and any trailing frame still count
    finally:
        decompressed.stop()


def _check_digest(source: _HashingChunkReader, expected: str | None, label: str) -> None:
    source.drain()
    if expected is not None and source.digest != expected:
        raise IntegrityError(
            f"{label} is corrupt: expected {expected} but the bytes hash to {source.digest}; "
            "it was refused and nothing was kept."
        )


def _run_extraction(
    source: _HashingChunkReader,
    extraction: "_Extraction",
    expected_digest: str | None,
    label: str,
    read_members: Callable[[_HashingChunkReader, Any], None] = _read_members,
) -> None:
    """Read every member into ``extraction``; a digest that differs explains an unsafe member."""
    try:
        read_members(source, extraction)
        extraction.finish()
    except (zstandard.ZstdError, tarfile.TarError) as error:
        extraction.abandon()
        _check_digest(source, expected_digest, label)
        raise PodenvError(f"{label} is not a valid tar.zst layer: {error}.") from None
    except UnsafeArchiveError:
        extraction.abandon()
        if expected_digest is not None:
            _check_digest(source, expected_digest, label)  # corruption explains the rest
        raise
    except BaseException:
        extraction.abandon()
        raise
    _check_digest(source, expected_digest, label)


def extract_stream(
    chunks: Iterable[bytes],
    target: Path,
    *,
    expected_digest: str | None = None,
    label: str = "archive",
    writers: int = DEFAULT_WRITERS,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> ExtractResult:
    """Extract the tar.zst arriving as ``chunks`` into ``target``, which must not exist.

    ``target`` is created, filled and returned complete, or removed on any error.
    When ``expected_digest`` is given, bytes that hash otherwise raise IntegrityError
    naming both digests. ``label`` names the archive in messages (e.g. the layer).
    ``limits`` (the manifest's declared bytes and files) are refused as soon as exceeded.

    An error from ``chunks`` itself (the network) or from the filesystem (a full disk)
    is raised as it is, at once: the rest of the archive is not fetched to hash it.
    """
    target = Path(os.path.abspath(target))
    try:
        target.mkdir()
    except FileExistsError:
        raise PodenvError(
            f"{target} exists already; extraction creates its target and never overwrites."
        ) from None
    source = _HashingChunkReader(chunks, progress)
    extraction = _Extraction(target, writers, limits or Limits(), label)
    try:
        _run_extraction(source, extraction, expected_digest, label)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return ExtractResult(source.digest, source.size, extraction.file_count, extraction.bytes_written)


def extract_file(
    archive: Path,
    target: Path,
    *,
    expected_digest: str | None = None,
    writers: int = DEFAULT_WRITERS,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> ExtractResult:
    """Extract a tar.zst file; see :func:`extract_stream`."""
    return extract_stream(
        read_file_chunks(archive),
        target,
        expected_digest=expected_digest,
        label=f"archive '{archive}'",
        writers=writers,
        progress=progress,
        limits=limits,
    )


class _ShardExtraction(_Extraction):
    """One shard of a package-sharded layer: regular files only, into a staging directory that
    other processes fill with the layer's other shards at the same time.

    The layer's directories exist already (made from its index); a file whose directory is not
    one of them (below a link, below a file, or nowhere) is refused. Links come from the index
    once every shard is in, so no shard may carry one. ``O_EXCL`` makes a path that a second
    shard also carries fail in whichever process comes second.
    """

    def __init__(
        self,
        target: Path,
        writers: int,
        limits: Limits,
        label: str,
        directories: frozenset[str],
        in_flight: int,
    ) -> None:
        super().__init__(target, writers, limits, label)
        self._budget = _ByteBudget(in_flight)
        self._layer_directories = directories

    def add_file(self, content: "_Readable", member: tarfile.TarInfo) -> None:
        if self._failure is not None:
            raise self._failure
        name = _member_name(member)
        self._check_new(name, member, directory=False)
        self._check_limits(member)
        if name in self._layer_directories or name.rpartition("/")[0] not in self._layer_directories:
            raise UnsafeArchiveError(
                f"shard member '{member.name}' is not in a directory of the layer's index "
                "(below a link, a file, or nothing); refusing to extract."
            )
        self._add_file(content, member, name)
        self.file_count += 1


def _read_shard_members(source: _HashingChunkReader, extraction: _ShardExtraction) -> None:
    decompressed = _Decompressor(source)
    try:
        for member, content in iter_files(ByteSource(decompressed.read, READ_SIZE), HEADER_LIMIT):
            extraction.add_file(content, member)
        while decompressed.read():
            pass  # the end-of-archive padding and any trailing frame still count
    finally:
        decompressed.stop()


def extract_shard(
    chunks: Iterable[bytes],
    target: Path,
    directories: frozenset[str],
    *,
    expected_digest: str,
    label: str,
    limits: Limits,
    writers: int = 4,
    in_flight: int = IN_FLIGHT_LIMIT,
) -> ExtractResult:
    """Extract one verified shard's files into ``target``, which exists with ``directories``
    ("" included). What it wrote stays on failure: the caller owns and removes the staging."""
    source = _HashingChunkReader(chunks, None)
    target = Path(os.path.abspath(target))
    extraction = _ShardExtraction(target, writers, limits, label, directories, in_flight)
    try:
        _run_extraction(source, extraction, expected_digest, label, _read_shard_members)
    except FileExistsError as error:
        taken = os.path.relpath(error.filename, target) if error.filename else "a file"
        raise UnsafeArchiveError(
            f"{label} carries '{taken}', which another shard of the layer carries too; refusing to extract."
        ) from None
    return ExtractResult(source.digest, source.size, extraction.file_count, extraction.bytes_written)
