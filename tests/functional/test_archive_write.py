"""The writer: the same tree gives the same bytes, and the output is whole or absent."""

import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from podenv.archive.writer import (
    ARCHIVE_MTIME,
    ArchiveEntry,
    entries_from_tree,
    pack_tree,
    write_archive,
)
from podenv.errors import PodenvError

# (relative path, content, executable); directories come from the paths.
TREE_FILES = [
    ("bin/tool", b"#!/bin/sh\necho tool\n", True),
    ("lib/a.txt", b"shared content\n" * 50, False),
    ("lib/b.txt", b"shared content\n" * 50, False),
    ("lib/empty", b"", False),
    ("data.bin", bytes(range(256)) * 40, False),
    ("z/deep/nested/file.txt", b"deep\n", False),
]
TREE_EMPTY_DIRS = ["share/empty", "z/also-empty"]
TREE_SYMLINKS = [("link", "lib/a.txt"), ("z/up", "../bin")]


def _set_tree_mtime(root: Path, mtime: int) -> None:
    """Give every entry below ``root`` (deepest first) the same mtime, links included."""
    paths = sorted(root.rglob("*"), key=lambda path: len(path.parts), reverse=True)
    for path in paths:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _make_tree(
    root: Path,
    *,
    file_mode: int,
    dir_mode: int,
    exec_mode: int,
    mtime: int,
    reverse: bool,
    hardlink: bool,
) -> None:
    """Create the TREE_* content below ``root`` with the given incidental properties."""
    root.mkdir()
    files = list(reversed(TREE_FILES)) if reverse else list(TREE_FILES)
    for relative, content, executable in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if hardlink and relative == "lib/b.txt":
            other = root / "lib/a.txt"
            if not other.exists():
                other.write_bytes(content)
            os.link(other, path)
        elif not path.exists():
            path.write_bytes(content)
        path.chmod(exec_mode if executable else file_mode)
    dirs = list(reversed(TREE_EMPTY_DIRS)) if reverse else TREE_EMPTY_DIRS
    for relative in dirs:
        (root / relative).mkdir(parents=True)
    links = list(reversed(TREE_SYMLINKS)) if reverse else TREE_SYMLINKS
    for relative, target in links:
        os.symlink(target, root / relative)
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(dir_mode)
    _set_tree_mtime(root, mtime)


def _members(archive: Path) -> list[tarfile.TarInfo]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes()))
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        return list(tar)


def test_same_content_gives_byte_identical_archives(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _make_tree(
        first,
        file_mode=0o600,
        dir_mode=0o700,
        exec_mode=0o700,
        mtime=1_000_000_000,
        reverse=False,
        hardlink=True,
    )
    _make_tree(
        second,
        file_mode=0o644,
        dir_mode=0o755,
        exec_mode=0o755,
        mtime=1_700_000_000,
        reverse=True,
        hardlink=False,
    )
    # The two trees really differ in everything but content.
    a1, b1 = first / "lib/a.txt", first / "lib/b.txt"
    a2, b2 = second / "lib/a.txt", second / "lib/b.txt"
    assert a1.stat().st_ino == b1.stat().st_ino
    assert a2.stat().st_ino != b2.stat().st_ino
    assert a1.stat().st_mode & 0o777 == 0o600
    assert a2.stat().st_mode & 0o777 == 0o644
    assert a1.stat().st_mtime != a2.stat().st_mtime
    assert (first / "z").stat().st_mtime != (second / "z").stat().st_mtime

    info1 = pack_tree(first, tmp_path / "out1" / "layer.tar.zst")
    info2 = pack_tree(second, tmp_path / "out2" / "layer.tar.zst")

    bytes1 = (tmp_path / "out1" / "layer.tar.zst").read_bytes()
    bytes2 = (tmp_path / "out2" / "layer.tar.zst").read_bytes()
    assert bytes1 == bytes2
    assert info1 == info2
    assert info1.digest == "sha256:" + hashlib.sha256(bytes1).hexdigest()
    assert info1.size == len(bytes1)
    assert info1.unpacked_size == sum(len(content) for _, content, _ in TREE_FILES)
    assert info1.files == len(TREE_FILES) + len(TREE_SYMLINKS)


def test_headers_are_normalised_sorted_and_without_hardlinks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _make_tree(
        tree,
        file_mode=0o600,
        dir_mode=0o700,
        exec_mode=0o700,
        mtime=1_234_567_890,
        reverse=True,
        hardlink=True,
    )
    pack_tree(tree, tmp_path / "layer.tar.zst")
    members = _members(tmp_path / "layer.tar.zst")

    names = [member.name for member in members]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    expected_dirs = {"bin", "lib", "share", "share/empty", "z", "z/deep", "z/deep/nested"}
    expected_dirs |= {"z/also-empty"}
    assert {m.name for m in members if m.isdir()} == expected_dirs
    assert {m.name for m in members if m.isreg()} == {relative for relative, _, _ in TREE_FILES}
    assert {(m.name, m.linkname) for m in members if m.issym()} == set(TREE_SYMLINKS)
    assert not any(member.islnk() for member in members)
    for member in members:
        assert member.mtime == ARCHIVE_MTIME
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        if member.isdir():
            assert member.mode == 0o755
        elif member.issym():
            assert member.mode == 0o777
        elif member.name == "bin/tool":
            assert member.mode == 0o755
        else:
            assert member.mode == 0o644, member.name


def _compressible_tree(root: Path, total: int) -> None:
    """About ``total`` bytes of moderately compressible, reproducible content."""
    generator = random.Random(1234)
    root.mkdir()
    written, index = 0, 0
    while written < total:
        pieces = [generator.randbytes(64) * generator.randint(1, 8) for _ in range(40_000)]
        content = b"".join(pieces)
        (root / f"part-{index:02d}.bin").write_bytes(content)
        written += len(content)
        index += 1


def test_thread_count_does_not_change_bytes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    # Large enough that zstd splits the work into several jobs when it has threads.
    _compressible_tree(tree, 24 << 20)
    one = pack_tree(tree, tmp_path / "one.tar.zst", threads=1)
    four = pack_tree(tree, tmp_path / "four.tar.zst", threads=4)
    default = pack_tree(tree, tmp_path / "default.tar.zst")
    assert one.unpacked_size >= 24 << 20
    assert one.size < one.unpacked_size  # it did compress
    assert one == four == default
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "four.tar.zst").read_bytes()
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "default.tar.zst").read_bytes()


def _plain_tree(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    _make_tree(
        root,
        file_mode=0o644,
        dir_mode=0o755,
        exec_mode=0o755,
        mtime=1_500_000_000,
        reverse=False,
        hardlink=False,
    )
    return root


def test_changed_byte_changes_digest(tmp_path: Path) -> None:
    original = _plain_tree(tmp_path, "original")
    changed = _plain_tree(tmp_path, "changed")
    path = changed / "data.bin"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    os.utime(path, (1_500_000_000, 1_500_000_000))

    before = pack_tree(original, tmp_path / "original.tar.zst")
    after = pack_tree(changed, tmp_path / "changed.tar.zst")
    assert before.digest != after.digest
    assert before.unpacked_size == after.unpacked_size


def test_exec_bit_is_part_of_the_content(tmp_path: Path) -> None:
    original = _plain_tree(tmp_path, "original")
    changed = _plain_tree(tmp_path, "changed")
    (changed / "data.bin").chmod(0o755)
    before = pack_tree(original, tmp_path / "original.tar.zst")
    after = pack_tree(changed, tmp_path / "changed.tar.zst")
    assert before.digest != after.digest


def test_missing_source_leaves_no_output_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated.txt").write_bytes(b"keep me")
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(7).randbytes(3 << 20))
    entries = [
        ArchiveEntry("a/first.bin", "file", source=big),
        ArchiveEntry("a", "dir"),
        ArchiveEntry("b.txt", "file", data=b"inline"),
        ArchiveEntry("zz-missing.bin", "file", source=tmp_path / "does-not-exist"),
    ]
    with pytest.raises(FileNotFoundError):
        write_archive(entries, out / "layer.tar.zst", threads=1)
    assert sorted(os.listdir(out)) == ["unrelated.txt"]
    assert (out / "unrelated.txt").read_bytes() == b"keep me"


def test_failed_rewrite_keeps_the_previous_complete_output(tmp_path: Path) -> None:
    output = tmp_path / "out" / "layer.tar.zst"
    good = write_archive([ArchiveEntry("a.txt", "file", data=b"a" * 1000)], output)
    previous = output.read_bytes()
    entries = [
        ArchiveEntry("a.txt", "file", data=b"b" * 1000),
        ArchiveEntry("b.txt", "file", source=tmp_path / "missing"),
    ]
    with pytest.raises(FileNotFoundError):
        write_archive(entries, output)
    assert output.read_bytes() == previous
    assert good.digest == "sha256:" + hashlib.sha256(previous).hexdigest()
    assert sorted(os.listdir(output.parent)) == ["layer.tar.zst"]


def test_duplicate_entry_names_are_refused_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    entries = [
        ArchiveEntry("same", "file", data=b"one"),
        ArchiveEntry("other", "dir"),
        ArchiveEntry("same", "symlink", link_target="other"),
    ]
    with pytest.raises(PodenvError, match="'same'"):
        write_archive(entries, out / "layer.tar.zst")
    assert not out.exists() or os.listdir(out) == []


def test_special_files_in_a_tree_are_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok.txt").write_bytes(b"ok")
    os.mkfifo(tree / "pipe")
    with pytest.raises(PodenvError, match="pipe"):
        pack_tree(tree, tmp_path / "out" / "layer.tar.zst")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_entries_from_tree_reports_exec_bit_and_links(tmp_path: Path) -> None:
    tree = _plain_tree(tmp_path, "tree")
    entries = {entry.name: entry for entry in entries_from_tree(tree)}
    assert entries["bin/tool"].kind == "file" and entries["bin/tool"].executable
    assert entries["lib/a.txt"].kind == "file" and not entries["lib/a.txt"].executable
    assert entries["link"].kind == "symlink" and entries["link"].link_target == "lib/a.txt"
    assert entries["z/up"].kind == "symlink" and entries["z/up"].link_target == "../bin"
    assert entries["share/empty"].kind == "dir"
