"""The reader bounds what an untrusted archive may cost before its digest can be checked:
declared bytes and files are hard limits, header sizes are bounded, and a refusal or a
failing source is reported once, as itself."""

import io
import logging
import os
import resource
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from podenv.archive import Limits, extract_stream
from podenv.archive.reader import HEADER_LIMIT
from podenv.errors import StoreError, UnsafeArchiveError
from tests.functional.test_archive_extract import build_tar_zst, file_member, sha256

TEN_FILES = [file_member(f"f{index}.txt", b"x" * 100) for index in range(10)]


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message


def test_more_files_than_declared_are_refused_while_extracting(tmp_path: Path) -> None:
    data = build_tar_zst(TEN_FILES)
    target = tmp_path / "target"

    with pytest.raises(UnsafeArchiveError, match="more than the 9 files it declares") as raised:
        extract_stream(iter([data]), target, expected_digest=sha256(data), limits=Limits(files=9))

    assert "'f9.txt'" in str(raised.value)
    _one_line(str(raised.value))
    assert not os.path.lexists(target)


def test_more_bytes_than_declared_are_refused_before_they_are_written(tmp_path: Path) -> None:
    data = build_tar_zst(TEN_FILES)
    target = tmp_path / "target"

    with pytest.raises(UnsafeArchiveError, match="more than the 950 bytes it declares") as raised:
        extract_stream(iter([data]), target, expected_digest=sha256(data), limits=Limits(bytes=950))

    assert "'f9.txt'" in str(raised.value)
    assert not os.path.lexists(target)


def test_exactly_the_declared_amount_extracts(tmp_path: Path) -> None:
    data = build_tar_zst(TEN_FILES)
    result = extract_stream(iter([data]), tmp_path / "target", limits=Limits(bytes=1000, files=10))
    assert (result.files, result.bytes_written) == (10, 1000)


def test_directories_beyond_the_allowance_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import podenv.archive.reader as reader

    monkeypatch.setattr(reader, "DIRECTORY_ALLOWANCE", 5)
    members = []
    for index in range(10):
        info = tarfile.TarInfo(f"d{index}")
        info.type = tarfile.DIRTYPE
        members.append((info, None))
    with pytest.raises(UnsafeArchiveError, match="more than 5 directories"):
        extract_stream(iter([build_tar_zst(members)]), tmp_path / "target", limits=Limits(files=0))
    assert not os.path.lexists(tmp_path / "target")


def _raw_header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _zst_with_big_header(kind: bytes, size: int) -> bytes:
    """A tar.zst whose first member is a ``kind`` header of ``size`` bytes of 'a': tiny
    compressed, ``size`` bytes to whoever reads the header whole."""
    compressed = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(compressed, closefd=False) as sink:
        sink.write(_raw_header("././@PaxHeader", kind, size))
        block = b"a" * (8 << 20)
        remaining = size + (-size % 512)
        while remaining:
            piece = min(remaining, len(block))
            sink.write(block[:piece])
            remaining -= piece
        sink.write(b"\0" * 1024)
    return compressed.getvalue()


@pytest.mark.parametrize(
    "kind",
    [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK],
    ids=["pax", "longname", "longlink"],
)
def test_an_oversized_extended_header_is_refused_unread(kind: bytes, tmp_path: Path) -> None:
    data = _zst_with_big_header(kind, HEADER_LIMIT + 1)
    with pytest.raises(UnsafeArchiveError, match="extended header of") as raised:
        extract_stream(iter([data]), tmp_path / "target")
    _one_line(str(raised.value))
    assert not os.path.lexists(tmp_path / "target")


@pytest.mark.parametrize("kind", [tarfile.XGLTYPE, tarfile.GNUTYPE_SPARSE], ids=["global", "sparse"])
def test_header_kinds_layers_never_hold_are_refused(kind: bytes, tmp_path: Path) -> None:
    data = _zst_with_big_header(kind, 100)
    with pytest.raises(UnsafeArchiveError, match="global or sparse header"):
        extract_stream(iter([data]), tmp_path / "target")


HUGE_HEADER = 768 << 20


def test_a_tiny_blob_with_a_huge_pax_header_keeps_memory_bounded(tmp_path: Path) -> None:
    """768 MiB of header in a blob of a few hundred KiB: the extracting process stays far below."""
    archive = tmp_path / "bomb.tar.zst"
    archive.write_bytes(_zst_with_big_header(tarfile.XHDTYPE, HUGE_HEADER))
    assert archive.stat().st_size < 1 << 20
    script = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from podenv.archive import extract_file
        from podenv.errors import UnsafeArchiveError
        try:
            extract_file(Path({str(archive)!r}), Path({str(tmp_path / "target")!r}))
        except UnsafeArchiveError as error:
            print(error)
        # VmHWM is this process's own peak; ru_maxrss would carry the parent's across fork+exec.
        status = Path("/proc/self/status").read_text().splitlines()
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    refusal, peak_kib = result.stdout.strip().splitlines()
    assert "extended header of" in refusal
    assert int(peak_kib) < 200 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < HUGE_HEADER // 1024


def test_a_refusal_after_many_queued_files_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes still queued when a member is refused are cancelled quietly: no callback tracebacks."""
    members = [file_member(f"many/f{index:05d}", b"y" * 2048) for index in range(3000)]
    members.append(file_member("../escape", b"z"))
    data = build_tar_zst(members)

    with caplog.at_level(logging.DEBUG), pytest.raises(UnsafeArchiveError, match=r"contains '\.\.'"):
        extract_stream(iter([data]), tmp_path / "target", writers=1)

    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    assert not os.path.lexists(tmp_path / "target")


def _failing_after(data: bytes, good: int) -> Iterator[bytes]:
    yield data[:good]
    raise StoreError("the store at s3://b/p reset the connection after 1 retry.")


def test_a_failing_source_is_reported_as_itself_not_as_corruption(tmp_path: Path) -> None:
    members = [file_member(f"f{index:04d}", os.urandom(4096)) for index in range(200)]
    data = build_tar_zst(members)
    with pytest.raises(StoreError, match="reset the connection"):
        extract_stream(
            _failing_after(data, len(data) // 2), tmp_path / "target", expected_digest=sha256(data)
        )
    assert not os.path.lexists(tmp_path / "target")


def test_a_filesystem_error_does_not_fetch_the_rest(tmp_path: Path) -> None:
    """An OS error while writing ends the extraction at once: the remaining chunks stay unread."""
    members = [file_member("n" * 300, b"1")]  # longer than any filesystem's name limit
    data = build_tar_zst(members + [file_member(f"pad{index}", os.urandom(1 << 18)) for index in range(256)])
    pulled = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            pulled.append(start)
            yield data[start : start + 65536]

    with pytest.raises(OSError, match="File name too long"):
        extract_stream(chunks(), tmp_path / "target", expected_digest=sha256(data))
    assert len(pulled) < len(range(0, len(data), 65536)) // 2
    assert not os.path.lexists(tmp_path / "target")
