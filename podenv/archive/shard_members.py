"""The members of a shard's tar stream, read strictly: regular files in the headers podenv writes.

A shard holds regular files only (ADR 0012), so its reader need not parse every tar there is.
tarfile costs about 100 µs of Python per member, which at 60,000 files is seconds of a boot's
CPU; this reader accepts exactly what the writer emits (POSIX ustar headers with a valid
checksum, and PAX extended headers for long names and large sizes) and refuses anything
else with the member's name: links, directories, devices, GNU and global headers, sparse files.

It yields `tarfile.TarInfo` objects so that the extraction's checks (names, duplicates,
limits, directories) are the same ones the old-format reader runs.
"""

import tarfile
from collections.abc import Callable, Iterator

from podenv.errors import UnsafeArchiveError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_USTAR_MAGIC = b"ustar\x0000"  # magic and version, as POSIX (and tarfile's PAX_FORMAT) write them
_REGULAR = (b"0", b"\x00")
_PAX = b"x"
_CHECKSUM_FIELD = slice(148, 156)


class ShardFormatError(tarfile.TarError):
    """The stream is not a tar archive (bad checksum, truncated): reported like tarfile's errors."""


class ByteSource:
    """Exact reads from a ``read(size)`` source that returns chunks of any length."""

    def __init__(self, read: Callable[[int], bytes], chunk_size: int) -> None:
        self._read = read
        self._chunk_size = chunk_size
        self._chunk = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes; fewer only where the stream ends."""
        end = self._position + count
        if end <= len(self._chunk):
            piece = self._chunk[self._position : end]
            self._position = end
            return piece
        parts = [self._chunk[self._position :]]
        missing = count - len(parts[0])
        self._chunk, self._position = b"", 0
        while missing > 0:
            chunk = self._read(self._chunk_size)
            if not chunk:
                break
            if len(chunk) > missing:
                self._chunk, self._position = chunk, missing
                chunk = chunk[:missing]
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def take_view(self, count: int) -> bytes | memoryview:
        """As `take`, without a copy where the bytes lie in one chunk (a large file's content
        passes from the decompressor to the file in 1 MiB views)."""
        end = self._position + count
        if end <= len(self._chunk):
            view = memoryview(self._chunk)[self._position : end]
            self._position = end
            return view
        return self.take(count)

    def take_exactly(self, count: int, what: str) -> bytes:
        data = self.take(count)
        if len(data) != count:
            raise ShardFormatError(f"unexpected end of data in {what}")
        return data


class MemberContent:
    """``read(size)`` over one member's bytes, as tarfile's ``extractfile`` gives them."""

    def __init__(self, source: ByteSource, size: int, name: str) -> None:
        self._source = source
        self._left = size
        self._name = name

    def read(self, size: int = -1) -> bytes | memoryview:
        count = self._left if size < 0 else min(size, self._left)
        data = self._source.take_view(count)
        if len(data) != count:
            raise ShardFormatError(f"unexpected end of data in member '{self._name}'")
        self._left -= count
        return data

    def skip_rest(self) -> None:
        while self._left:
            self.read(1 << 20)


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # base-256, for numbers too large for octal
        if field[0] != 0x80:
            raise ShardFormatError(f"a header holds a negative or oversized {what}")
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise ShardFormatError(f"a header holds an invalid {what} {digits!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _check_header(header: bytes) -> None:
    stored = _octal(header[_CHECKSUM_FIELD], "checksum")
    if stored != sum(header) - sum(header[_CHECKSUM_FIELD]) + 8 * ord(" "):
        raise ShardFormatError("bad checksum in a header")
    if header[257:265] != _USTAR_MAGIC:
        raise UnsafeArchiveError(
            f"shard member '{_text(header[:100])}' has a header podenv does not write (not POSIX "
            "ustar); refusing to extract."
        )


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header ("<length> <key>=<value>\\n" each)."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        length_text, space, _ = data[position : position + 20].partition(b" ")
        if not space or not length_text.isdigit():
            raise ShardFormatError("a malformed extended header")
        length = int(length_text)
        record = data[position : position + length]
        if length <= len(length_text) + 1 or len(record) != length or not record.endswith(b"\n"):
            raise ShardFormatError("a malformed extended header")
        key, equals, value = record[len(length_text) + 1 : -1].partition(b"=")
        if not equals:
            raise ShardFormatError("a malformed extended header")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    if any(key.startswith("GNU.sparse") for key in records):
        raise UnsafeArchiveError(
            "a shard member is a sparse file, which podenv never writes; refusing to extract."
        )
    return records


def _padding(size: int) -> int:
    return -size % BLOCK


def iter_files(source: ByteSource, header_limit: int) -> Iterator[tuple[tarfile.TarInfo, MemberContent]]:
    """Each regular file with its content, in order; the caller reads (or skips) the content
    before asking for the next. Ends at the end-of-archive block or the end of the stream."""
    extended: dict[str, str] | None = None  # the extended header of the next member
    while True:
        header = source.take(BLOCK)
        if not header or header == _ZERO_BLOCK:
            if extended is not None:
                raise ShardFormatError("an extended header at the end of the archive")
            return
        if len(header) != BLOCK:
            raise ShardFormatError("unexpected end of data in a header")
        _check_header(header)
        kind = header[156:157]
        size = _octal(header[124:136], "size")
        if kind == _PAX:
            if extended is not None:
                raise ShardFormatError("two extended headers for one member")
            if size > header_limit:
                raise UnsafeArchiveError(
                    f"archive has an extended header of {size} bytes (at most {header_limit} are read); "
                    "refusing to extract."
                )
            data = source.take_exactly(size + _padding(size), "an extended header")
            extended = _pax_records(data[:size])
            continue
        name = _text(header[:100])
        prefix = _text(header[345:500])
        extended = extended or {}
        name = extended.get("path", f"{prefix}/{name}" if prefix else name)
        if kind not in _REGULAR:
            raise UnsafeArchiveError(
                f"shard member '{name}' is not a regular file (a shard holds files only; "
                "directories and links come from the layer's index); refusing to extract."
            )
        if "size" in extended:
            if not (extended["size"].isascii() and extended["size"].isdigit()):
                raise ShardFormatError(f"member '{name}' has an invalid size {extended['size']!r}")
            size = int(extended["size"])
        extended = None
        member = tarfile.TarInfo(name)
        member.size = size
        member.mode = _octal(header[100:108], "mode")
        content = MemberContent(source, size, name)
        yield member, content
        content.skip_rest()
        source.take_exactly(_padding(size), f"the padding of member '{name}'")
