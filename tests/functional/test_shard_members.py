"""The strict shard reader: what podenv's writer emits reads back exactly; anything else is refused."""

import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from podenv.archive import ArchiveEntry, write_archive
from podenv.archive.shard_members import ByteSource, ShardFormatError, iter_files
from podenv.errors import UnsafeArchiveError

HEADER_LIMIT = 64 << 10


def _members(data: bytes, chunk: int = 4096) -> list[tuple[str, int, int, bytes]]:
    source = ByteSource(io.BytesIO(data).read, chunk)
    return [
        (member.name, member.size, member.mode, bytes(content.read()))
        for member, content in iter_files(source, HEADER_LIMIT)
    ]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], format: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_what_the_writer_emits_reads_back_exactly(tmp_path: Path, chunk: int) -> None:
    long_name = "lib/python3.11/site-packages/" + "deep/" * 30 + "module.py"
    files = {
        "bin/tool": (b"#!/bin/sh\necho hi\n", True),
        "empty": (b"", False),
        "block": (b"x" * 512, False),
        long_name: (b"long", False),
        "share/ünïcode-名前.txt": (b"utf-8 names go in an extended header", False),
        "big.bin": (bytes(range(256)) * 5000, False),
    }
    entries = [
        ArchiveEntry(name, "file", data=data, executable=executable)
        for name, (data, executable) in files.items()
    ]
    archive = tmp_path / "shard.tar.zst"
    write_archive(entries, archive, threads=1)
    data = zstandard.ZstdDecompressor().stream_reader(archive.read_bytes(), read_across_frames=True).read()

    read = _members(data, chunk)

    assert {name: (content, bool(mode & 0o111)) for name, _, mode, content in read} == files
    assert [size for _, size, _, _ in read] == [len(files[name][0]) for name, _, _, _ in read]


def test_a_ustar_prefix_field_joins_the_name() -> None:
    name = "a" * 120 + "/" + "b" * 60  # too long for the name field: ustar splits it
    data = _tar([_file(name, b"payload")], format=tarfile.USTAR_FORMAT)

    assert _members(data) == [(name, 7, 0o644, b"payload")]


def test_an_extended_header_size_wins_over_the_header_field() -> None:
    info, payload = _file("f", b"12345")
    info.pax_headers = {"size": "5"}
    data = _tar([(info, payload)])

    assert _members(data)[0][1] == 5


@pytest.mark.parametrize(
    "kind",
    [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE],
)
def test_anything_but_a_regular_file_is_refused_by_name(kind: bytes) -> None:
    info = tarfile.TarInfo("lib/thing")
    info.type = kind
    info.linkname = "target" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    data = _tar([_file("ok", b"fine"), (info, None)])

    with pytest.raises(UnsafeArchiveError, match=r"'lib/thing/?' is not a regular file"):
        _members(data)


def test_a_gnu_header_is_refused() -> None:
    data = _tar([_file("x" * 150, b"gnu long name")], format=tarfile.GNU_FORMAT)

    with pytest.raises(UnsafeArchiveError, match="not POSIX ustar"):
        _members(data)


def test_a_bad_checksum_is_a_format_error() -> None:
    data = bytearray(_tar([_file("f", b"content")]))
    data[0] ^= 0x01  # the name changes, the stored checksum does not

    with pytest.raises(ShardFormatError, match="bad checksum"):
        _members(bytes(data))


def test_an_extended_header_above_the_limit_is_refused_before_it_is_read() -> None:
    info, payload = _file("f", b"x")
    info.pax_headers = {"comment": "c" * (HEADER_LIMIT + 1)}
    data = _tar([(info, payload)])

    with pytest.raises(UnsafeArchiveError, match="extended header of"):
        _members(data)


def test_a_sparse_file_is_refused() -> None:
    info, payload = _file("f", b"x")
    info.pax_headers = {"GNU.sparse.map": "0,1"}

    with pytest.raises(UnsafeArchiveError, match="sparse"):
        _members(_tar([(info, payload)]))


def test_an_invalid_extended_size_is_a_format_error() -> None:
    info, payload = _file("f", b"x")
    info.pax_headers = {"size": "-1"}

    with pytest.raises(ShardFormatError, match="invalid size"):
        _members(_tar([(info, payload)]))


@pytest.mark.parametrize("cut", [100, 512 + 3, 1024 + 700])
def test_a_truncated_stream_is_a_format_error(cut: int) -> None:
    data = _tar([_file("a", b"a" * 600), _file("b", b"b" * 600)])

    with pytest.raises(ShardFormatError, match="unexpected end of data"):
        _members(data[:cut])


def test_a_base_256_size_is_read() -> None:
    data = bytearray(_tar([_file("f", b"abc")]))
    field = b"\x80" + (3).to_bytes(11, "big")
    data[124:136] = field
    checksum = sum(data[:148]) + 8 * 32 + sum(data[156:512])
    data[148:156] = b"%06o\0 " % checksum

    assert _members(bytes(data)) == [("f", 3, 0o644, b"abc")]


def test_a_size_in_other_digits_than_ascii_is_a_format_error() -> None:
    info, payload = _file("f", b"x")
    info.pax_headers = {"size": "²"}  # str.isdigit() says yes; int() says no

    with pytest.raises(ShardFormatError, match="invalid size"):
        _members(_tar([(info, payload)]))
