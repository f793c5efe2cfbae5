"""The reader: round trips, hostile archives, corruption, truncation and odd chunking."""

import hashlib
import io
import os
import random
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from podenv.archive.reader import SMALL_FILE_LIMIT, extract_file, extract_stream
from podenv.archive.writer import ArchiveEntry, ArchiveInfo, pack_tree, write_archive
from podenv.errors import IntegrityError, PodenvError, UnsafeArchiveError

# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: name -> (type, content digest, exec bit) or link target."""
    result: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                result[relative] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[relative] = ("dir",)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[relative] = ("file", digest, bool(info.st_mode & 0o100))
            else:
                result[relative] = ("special", stat.S_IFMT(info.st_mode))
    return result


def snapshot_with_times(root: Path) -> dict[str, tuple]:
    """Like :func:`snapshot`, plus mode and mtime, to prove nothing was touched."""
    result = {}
    for relative, entry in snapshot(root).items():
        info = (root / relative).lstat()
        result[relative] = (*entry, info.st_mode, info.st_mtime_ns, info.st_ino)
    return result


def file_member(name: str, data: bytes = b"", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def special_member(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, None


Member = tuple[tarfile.TarInfo, bytes | None]


def build_tar_zst(members: list[Member]) -> bytes:
    """A tar.zst holding exactly ``members``, in order, with no sanitising at all."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(write_checksum=True).compress(buffer.getvalue())


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunks_of(data: bytes, sizes: Callable[[], int]) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = sizes()
        yield data[position : position + size]
        position += size


def make_source_tree(root: Path) -> dict[str, bytes]:
    """A tree with every kind of entry the writer supports; returns file contents by name."""
    generator = random.Random(42)
    long_path = "long/" + "/".join(["d" * 60] * 3) + "/"
    long_path += "f" * (200 - len(long_path))
    assert len(long_path) == 200
    files = {
        "empty.txt": b"",
        "small.txt": b"hello\n",
        "bin/run.sh": b"#!/bin/sh\necho run\n",
        "big/blob.bin": generator.randbytes(SMALL_FILE_LIMIT + 12_345),
        "données/café.txt": "crème brûlée\n".encode(),
        "日本語/ファイル.txt": "こんにちは\n".encode(),
        long_path: b"long path content\n",
        "many/" + "x" * 10 + ".txt": b"x" * 5000,
    }
    for index in range(40):
        files[f"many/f{index:03d}.txt"] = generator.randbytes(generator.randint(0, 3000))
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "bin/run.sh").chmod(0o755)
    (root / "many/f001.txt").chmod(0o700)
    (root / "empty-dir").mkdir()
    (root / "nested/empty/deeper").mkdir(parents=True)
    os.symlink("small.txt", root / "link-to-file")
    os.symlink("../small.txt", root / "bin/link-up")
    os.symlink("big", root / "link-to-dir")
    os.symlink("données/café.txt", root / "lien-é")
    os.symlink("does-not-exist-but-inside", root / "dangling")
    return files


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ArchiveInfo]:
    """(source tree, archive, info) shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("packed")
    source = base / "source"
    source.mkdir()
    make_source_tree(source)
    archive = base / "layer.tar.zst"
    return source, archive, pack_tree(source, archive)


# --------------------------------------------------------------------------- round trip


def test_round_trip_gives_back_the_same_tree(packed: tuple[Path, Path, ArchiveInfo], tmp_path: Path) -> None:
    source, archive, info = packed
    target = tmp_path / "target"
    result = extract_file(archive, target, expected_digest=info.digest)

    expected = snapshot(source)
    assert snapshot(target) == expected
    # The tree really has what the round trip is meant to cover.
    kinds = {entry[0] for entry in expected.values()}
    assert kinds == {"file", "dir", "symlink"}
    assert expected["bin/run.sh"][2] is True
    assert expected["many/f001.txt"][2] is True
    assert expected["small.txt"][2] is False
    assert expected["empty-dir"] == ("dir",)
    assert expected["nested/empty/deeper"] == ("dir",)
    assert any(len(name) == 200 for name in expected)
    assert (target / "big/blob.bin").stat().st_size > SMALL_FILE_LIMIT
    assert (target / "empty.txt").stat().st_size == 0

    assert result.digest == info.digest
    assert result.size == info.size
    assert result.files == info.files
    assert result.bytes_written == info.unpacked_size


def test_round_trip_modes_are_normalised(packed: tuple[Path, Path, ArchiveInfo], tmp_path: Path) -> None:
    _, archive, _ = packed
    target = tmp_path / "target"
    extract_file(archive, target)
    assert stat.S_IMODE((target / "bin/run.sh").stat().st_mode) & 0o111
    assert stat.S_IMODE((target / "small.txt").stat().st_mode) & 0o111 == 0


def test_round_trip_of_write_archive_entries(tmp_path: Path) -> None:
    entries = [
        ArchiveEntry("a/x.txt", "file", data=b"x"),
        ArchiveEntry("a/run", "file", data=b"#!/bin/sh\n", executable=True),
        ArchiveEntry("a/empty", "dir"),
        ArchiveEntry("a/link", "symlink", link_target="x.txt"),
    ]
    info = write_archive(entries, tmp_path / "layer.tar.zst")
    result = extract_file(tmp_path / "layer.tar.zst", tmp_path / "target")
    assert snapshot(tmp_path / "target") == {
        "a": ("dir",),
        "a/empty": ("dir",),
        "a/link": ("symlink", "x.txt"),
        "a/run": ("file", hashlib.sha256(b"#!/bin/sh\n").hexdigest(), True),
        "a/x.txt": ("file", hashlib.sha256(b"x").hexdigest(), False),
    }
    assert (result.digest, result.size, result.files, result.bytes_written) == (
        info.digest,
        info.size,
        info.files,
        info.unpacked_size,
    )


# --------------------------------------------------------------------------- chunking


@pytest.fixture(scope="module")
def small_packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveInfo]:
    base = tmp_path_factory.mktemp("small")
    source = base / "source"
    source.mkdir()
    generator = random.Random(3)
    for index in range(30):
        path = source / f"d{index % 4}" / f"f{index}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(generator.randbytes(generator.randint(0, 4000)))
    (source / "empty").mkdir()
    os.symlink("d0/f0.txt", source / "link")
    archive = base / "small.tar.zst"
    return archive, pack_tree(source, archive)


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param(lambda: 1, id="1-byte"),
        pytest.param(lambda: 7, id="7-bytes"),
        pytest.param(
            (lambda generator: lambda: generator.randint(1, 5000))(random.Random(11)),
            id="random-1..5000",
        ),
    ],
)
def test_stream_in_odd_chunks_matches_file(
    small_packed: tuple[Path, ArchiveInfo], tmp_path: Path, sizes: Callable[[], int]
) -> None:
    archive, info = small_packed
    data = archive.read_bytes()
    from_file = extract_file(archive, tmp_path / "from-file", expected_digest=info.digest)
    from_stream = extract_stream(
        chunks_of(data, sizes), tmp_path / "from-stream", expected_digest=info.digest
    )
    assert from_stream == from_file
    assert snapshot(tmp_path / "from-stream") == snapshot(tmp_path / "from-file")
    assert from_stream.digest == info.digest


def test_stream_in_random_chunks_with_a_large_file(
    packed: tuple[Path, Path, ArchiveInfo], tmp_path: Path
) -> None:
    source, archive, info = packed
    generator = random.Random(5)
    result = extract_stream(
        chunks_of(archive.read_bytes(), lambda: generator.randint(1, 70_000)),
        tmp_path / "target",
        expected_digest=info.digest,
    )
    assert snapshot(tmp_path / "target") == snapshot(source)
    assert (result.digest, result.size, result.files, result.bytes_written) == (
        info.digest,
        info.size,
        info.files,
        info.unpacked_size,
    )


def test_stream_with_empty_chunks_in_between(small_packed: tuple[Path, ArchiveInfo], tmp_path: Path) -> None:
    archive, info = small_packed
    data = archive.read_bytes()
    chunks = []
    for start in range(0, len(data), 1000):
        chunks += [b"", data[start : start + 1000]]
    chunks.append(b"")
    result = extract_stream(chunks, tmp_path / "target", expected_digest=info.digest)
    assert result.digest == info.digest
    assert result.size == info.size


def test_empty_chunk_mid_stream_does_not_end_the_archive(tmp_path: Path) -> None:
    """An empty chunk is not the end of the stream: all members must still be extracted."""
    generator = random.Random(8)
    entries = [ArchiveEntry(f"f{index:05d}", "file", data=generator.randbytes(512)) for index in range(2000)]
    info = write_archive(entries, tmp_path / "layer.tar.zst")
    data = (tmp_path / "layer.tar.zst").read_bytes()
    half = len(data) // 2
    target = tmp_path / "target"

    result = extract_stream([data[:half], b"", data[half:]], target, expected_digest=info.digest)

    assert len(os.listdir(target)) == 2000
    assert result.files == info.files == 2000
    assert result.bytes_written == info.unpacked_size


# --------------------------------------------------------------------------- hostile


@dataclass(frozen=True)
class Hostile:
    offender: str
    members: Callable[[Path], list[Member]]


BENIGN = file_member("benign.txt", b"harmless\n")


HOSTILE_CASES = {
    "dotdot": Hostile("../escape", lambda _: [BENIGN, file_member("../escape", b"pwned")]),
    "dotdot-inside-path": Hostile(
        "a/../../escape", lambda _: [BENIGN, file_member("a/../../escape", b"pwned")]
    ),
    "dotdot-dir": Hostile("../escape", lambda _: [BENIGN, dir_member("../escape")]),
    "absolute-path": Hostile("{tmp}/escape", lambda tmp: [BENIGN, file_member(f"{tmp}/escape", b"pwned")]),
    "symlink-outside": Hostile("evil-link", lambda _: [BENIGN, link_member("evil-link", "../../outside")]),
    "symlink-absolute": Hostile("evil-link", lambda _: [BENIGN, link_member("evil-link", "/etc/passwd")]),
    "nested-symlink-outside": Hostile(
        "sub/evil-link", lambda _: [dir_member("sub"), link_member("sub/evil-link", "../../outside")]
    ),
    "write-through-symlink": Hostile(
        "via-link/file",
        lambda _: [
            dir_member("sub"),
            link_member("via-link", "sub"),
            file_member("via-link/file", b"through the link"),
        ],
    ),
    "dir-through-symlink": Hostile(
        "via-link/newdir",
        lambda _: [dir_member("sub"), link_member("via-link", "sub"), dir_member("via-link/newdir")],
    ),
    "write-through-outside-symlink": Hostile(
        "evil-link",
        lambda _: [link_member("evil-link", ".."), file_member("evil-link/escape", b"pwned")],
    ),
    "two-step-symlink": Hostile(
        "evil-link",
        lambda _: [BENIGN, link_member("dot", "."), link_member("evil-link", "dot/../outside")],
    ),
    "two-step-symlink-reversed": Hostile(
        "evil-link",
        lambda _: [BENIGN, link_member("evil-link", "dot/../outside"), link_member("dot", ".")],
    ),
    "hardlink-outside": Hostile(
        "evil-hardlink",
        lambda _: [BENIGN, link_member("evil-hardlink", "../outside", tarfile.LNKTYPE)],
    ),
    "hardlink-absolute": Hostile(
        "evil-hardlink",
        lambda tmp: [BENIGN, link_member("evil-hardlink", f"{tmp}/outside", tarfile.LNKTYPE)],
    ),
    "hardlink-not-earlier": Hostile(
        "early-hardlink",
        lambda _: [
            BENIGN,
            link_member("early-hardlink", "later.txt", tarfile.LNKTYPE),
            file_member("later.txt", b"later"),
        ],
    ),
    "hardlink-to-symlink": Hostile(
        "evil-hardlink",
        lambda _: [
            BENIGN,
            link_member("soft", "benign.txt"),
            link_member("evil-hardlink", "soft", tarfile.LNKTYPE),
        ],
    ),
    "char-device": Hostile("evil-chr", lambda _: [BENIGN, special_member("evil-chr", tarfile.CHRTYPE)]),
    "block-device": Hostile("evil-blk", lambda _: [BENIGN, special_member("evil-blk", tarfile.BLKTYPE)]),
    "fifo": Hostile("evil-fifo", lambda _: [BENIGN, special_member("evil-fifo", tarfile.FIFOTYPE)]),
    "duplicate-file": Hostile(
        "dup.txt",
        lambda _: [BENIGN, file_member("dup.txt", b"first"), file_member("dup.txt", b"second")],
    ),
    "duplicate-symlink-then-file": Hostile(
        "dup.txt",
        lambda _: [BENIGN, link_member("dup.txt", "benign.txt"), file_member("dup.txt", b"second")],
    ),
    "duplicate-dir-then-file": Hostile("dup", lambda _: [dir_member("dup"), file_member("dup", b"second")]),
    "duplicate-file-then-dir": Hostile("dup", lambda _: [file_member("dup", b"first"), dir_member("dup")]),
    "duplicate-symlink-then-dir": Hostile("dup", lambda _: [link_member("dup", "."), dir_member("dup")]),
    "duplicate-file-via-dot-slash": Hostile(
        "./dup.txt",
        lambda _: [BENIGN, file_member("dup.txt", b"first"), file_member("./dup.txt", b"second")],
    ),
}


def _no_escape_anywhere(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name in ("escape", "outside"):
                found.append(os.path.join(dirpath, name))
    return found


@pytest.mark.parametrize("entry_point", ["extract_file", "extract_stream"])
@pytest.mark.parametrize("case", list(HOSTILE_CASES.values()), ids=list(HOSTILE_CASES))
def test_hostile_archive_is_refused(case: Hostile, entry_point: str, tmp_path: Path) -> None:
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    sentinel = work / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "keep.txt").write_bytes(b"sentinel\n")
    (sentinel / "sub" / "keep2.txt").write_bytes(b"sentinel 2\n")
    before = snapshot_with_times(sentinel)

    data = build_tar_zst(case.members(tmp_path))
    archive = tmp_path / "hostile.tar.zst"
    archive.write_bytes(data)
    target = work / "target"

    with pytest.raises(UnsafeArchiveError) as raised:
        if entry_point == "extract_file":
            extract_file(archive, target, expected_digest=sha256(data))
        else:
            extract_stream(iter([data[:100], data[100:]]), target)

    offender = case.offender.format(tmp=tmp_path)
    assert f"'{offender}'" in str(raised.value)
    assert not target.exists()
    assert not os.path.lexists(target)
    assert snapshot_with_times(sentinel) == before
    assert _no_escape_anywhere(tmp_path) == []
    assert sorted(os.listdir(work)) == ["sentinel"]


def test_benign_members_of_the_hostile_helper_extract(tmp_path: Path) -> None:
    """The hostile archives differ from a working one only in the offending member."""
    data = build_tar_zst(
        [
            BENIGN,
            dir_member("sub"),
            link_member("via-link", "sub"),
            link_member("dot", "."),
            link_member("ok-link", "dot/sub"),
            file_member("sub/file", b"content", 0o755),
            link_member("hard", "sub/file", tarfile.LNKTYPE),
        ]
    )
    result = extract_stream([data], tmp_path / "target", expected_digest=sha256(data))
    target = tmp_path / "target"
    assert (target / "benign.txt").read_bytes() == b"harmless\n"
    assert (target / "hard").read_bytes() == b"content"
    assert (target / "hard").stat().st_ino == (target / "sub/file").stat().st_ino
    assert os.readlink(target / "via-link") == "sub"
    assert result.files == 6


# --------------------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def corruptible(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """A valid archive of about 3 MiB unpacked, so that tar parsing starts before the end."""
    base = tmp_path_factory.mktemp("corruptible")
    source = base / "source"
    source.mkdir()
    generator = random.Random(99)
    for index in range(200):
        words = [generator.choice([b"alpha", b"beta", b"gamma", b"delta"]) for _ in range(2000)]
        (source / f"text-{index:03d}.txt").write_bytes(b" ".join(words))
    (source / "noise.bin").write_bytes(generator.randbytes(1 << 20))
    archive = base / "layer.tar.zst"
    info = pack_tree(source, archive)
    data = archive.read_bytes()
    assert info.unpacked_size > 2 << 20
    return data, info.digest


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda size: 40, id="early"),
        pytest.param(lambda size: size // 3, id="first-third"),
        pytest.param(lambda size: size // 2, id="middle"),
        pytest.param(lambda size: size - 100, id="last-100"),
        pytest.param(lambda size: size - 30, id="last-30"),
        pytest.param(lambda size: size - 1, id="last-byte"),
    ],
)
@pytest.mark.parametrize("flip", [0x01, 0xFF], ids=["bit", "byte"])
def test_flipped_byte_raises_integrity_error(
    corruptible: tuple[bytes, str], tmp_path: Path, where: Callable[[int], int], flip: int
) -> None:
    data, digest = corruptible
    corrupted = bytearray(data)
    corrupted[where(len(data))] ^= flip
    archive = tmp_path / "corrupt.tar.zst"
    archive.write_bytes(bytes(corrupted))
    target = tmp_path / "target"

    with pytest.raises(IntegrityError) as raised:
        extract_file(archive, target, expected_digest=digest)

    message = str(raised.value)
    assert digest in message
    assert sha256(bytes(corrupted)) in message
    assert not os.path.lexists(target)


def test_corrupted_member_name_still_reports_integrity_error(tmp_path: Path) -> None:
    """A transfer error that happens to turn a name into '../x' is corruption, not an attack.

    The member name sits in a PAX record (not covered by the tar header checksum) and in a
    raw zstd literal, and the frame is larger than the reader's first read, so the reader
    sees the damaged name before the zstd frame checksum.
    """
    name = "x./ü"
    generator = random.Random(1)
    entries = [
        ArchiveEntry("a", "file", data=generator.randbytes(5000)),
        ArchiveEntry(name, "file", data=b"hi"),
        ArchiveEntry("z", "file", data=generator.randbytes(3 << 20)),
    ]
    info = write_archive(entries, tmp_path / "layer.tar.zst")
    data = bytearray((tmp_path / "layer.tar.zst").read_bytes())
    position = bytes(data).index(name.encode())
    data[position] = ord(".")  # one byte: 'x./ü' becomes '../ü'
    target = tmp_path / "target"

    with pytest.raises(IntegrityError) as raised:
        extract_stream([bytes(data)], target, expected_digest=info.digest)

    assert info.digest in str(raised.value)
    assert sha256(bytes(data)) in str(raised.value)
    assert not os.path.lexists(target)


def test_wrong_expected_digest_raises_integrity_error(corruptible: tuple[bytes, str], tmp_path: Path) -> None:
    data, digest = corruptible
    wrong = sha256(b"something else")
    archive = tmp_path / "layer.tar.zst"
    archive.write_bytes(data)
    target = tmp_path / "target"

    with pytest.raises(IntegrityError) as raised:
        extract_file(archive, target, expected_digest=wrong)

    assert wrong in str(raised.value)
    assert digest in str(raised.value)
    assert not os.path.lexists(target)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda size: size // 2, id="half"),
        pytest.param(lambda size: size - 100, id="last-100-missing"),
        pytest.param(lambda size: size - 4, id="checksum-missing"),
        pytest.param(lambda size: size - 1, id="last-byte-missing"),
        pytest.param(lambda size: 0, id="empty"),
    ],
)
@pytest.mark.parametrize("with_digest", [True, False], ids=["with-digest", "without-digest"])
def test_truncated_archive_fails_and_leaves_no_target(
    corruptible: tuple[bytes, str],
    tmp_path: Path,
    cut: Callable[[int], int],
    with_digest: bool,
) -> None:
    data, digest = corruptible
    archive = tmp_path / "truncated.tar.zst"
    archive.write_bytes(data[: cut(len(data))])
    target = tmp_path / "target"

    expected_error = IntegrityError if with_digest else PodenvError
    with pytest.raises(expected_error):
        extract_file(archive, target, expected_digest=digest if with_digest else None)

    assert not os.path.lexists(target)


def test_truncated_at_a_member_boundary_fails(tmp_path: Path) -> None:
    """Files of 512 bytes put a tar member boundary at every zstd block boundary."""
    generator = random.Random(8)
    entries = [ArchiveEntry(f"f{index:05d}", "file", data=generator.randbytes(512)) for index in range(2000)]
    info = write_archive(entries, tmp_path / "layer.tar.zst")
    data = (tmp_path / "layer.tar.zst").read_bytes()
    target = tmp_path / "target"

    with pytest.raises(PodenvError):
        extract_stream([data[: len(data) // 2]], target)

    assert not os.path.lexists(target)
    assert info.files == 2000


# --------------------------------------------------------------------------- existing target


@pytest.mark.parametrize("existing", ["directory-with-content", "empty-directory", "file"])
def test_existing_target_is_refused_and_untouched(
    small_packed: tuple[Path, ArchiveInfo], tmp_path: Path, existing: str
) -> None:
    archive, info = small_packed
    target = tmp_path / "target"
    if existing == "file":
        target.write_bytes(b"not a directory")
        before = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)
    else:
        target.mkdir()
        if existing == "directory-with-content":
            (target / "d0").mkdir()
            (target / "d0" / "f0.txt").write_bytes(b"old content")
            (target / "keep.txt").write_bytes(b"keep")
            os.symlink("keep.txt", target / "link")
        before = snapshot_with_times(target)
    target_mtime = target.stat().st_mtime_ns

    with pytest.raises(PodenvError, match="exists already"):
        extract_file(archive, target, expected_digest=info.digest)

    assert target.stat().st_mtime_ns == target_mtime
    if existing == "file":
        after = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)
        assert after == before
    else:
        assert snapshot_with_times(target) == before


def test_a_name_with_a_nul_byte_is_refused_in_one_sentence_by_both_readers(tmp_path: Path) -> None:
    """A PAX name can carry a NUL byte, which no path may hold: refused by name, not by a crash."""
    from podenv.archive import Limits, extract_shard

    member, content = file_member("lib/a", b"x")
    member.pax_headers = {"path": "lib/a\0b"}  # the ustar name field would end at the NUL
    data = build_tar_zst([(member, content)])

    with pytest.raises(UnsafeArchiveError, match="NUL byte in its name"):
        extract_stream([data], tmp_path / "one-blob", expected_digest=sha256(data))
    (tmp_path / "staging" / "lib").mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match="NUL byte in its name"):
        extract_shard(
            [data], tmp_path / "staging", frozenset({"", "lib"}), expected_digest=sha256(data),
            label="shard", limits=Limits(bytes=1, files=1),
        )  # fmt: skip
    assert not (tmp_path / "one-blob").exists()
