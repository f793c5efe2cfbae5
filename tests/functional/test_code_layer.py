"""The code layer (podenv.codelayer): the worker package packed deterministically, so its digest
is the same from every checkout of the same source, and only the source decides it."""

import os
import shutil
from pathlib import Path

import pytest

from podenv.archive import extract_file
from podenv.codelayer import IMAGE_FILES, pack_code
from podenv.errors import PodenvError

REPOSITORY = Path(__file__).resolve().parents[2]


def _checkout(destination: Path, *, reverse: bool, mtime: int, mode: int) -> Path:
    """A copy of worker/ made the way another checkout would differ: file creation order,
    times, modes, bytecode caches and editor files."""
    source = REPOSITORY / "worker"
    files = sorted(path for path in source.rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    for path in reversed(files) if reverse else files:
        copy = destination / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        copy.chmod(mode)
        os.utime(copy, (mtime, mtime))
    (destination / "__pycache__").mkdir(exist_ok=True)
    (destination / "__pycache__" / "handler.cpython-311.pyc").write_bytes(os.urandom(64))
    (destination / ".handler.py.swp").write_bytes(os.urandom(64))
    return destination


def test_the_digest_is_the_same_from_two_checkouts(tmp_path: Path) -> None:
    first = _checkout(tmp_path / "a" / "worker", reverse=False, mtime=1_000_000, mode=0o644)
    second = _checkout(tmp_path / "b" / "worker", reverse=True, mtime=2_000_000_000, mode=0o755)
    one = pack_code(first, tmp_path / "one.tar.zst")
    two = pack_code(second, tmp_path / "two.tar.zst")
    assert one == two
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "two.tar.zst").read_bytes()
    assert one == pack_code(REPOSITORY / "worker", tmp_path / "repository.tar.zst")


def test_a_plugin_change_changes_the_digest(tmp_path: Path) -> None:
    source = _checkout(tmp_path / "worker", reverse=False, mtime=1, mode=0o644)
    before = pack_code(source, tmp_path / "before.tar.zst")
    demo = source / "models" / "demo.py"
    demo.write_text(demo.read_text() + "\n# changed\n")
    assert pack_code(source, tmp_path / "after.tar.zst").digest != before.digest


def test_the_layer_holds_the_package_and_not_the_image(tmp_path: Path) -> None:
    info = pack_code(REPOSITORY / "worker", tmp_path / "code.tar.zst")
    extract_file(tmp_path / "code.tar.zst", tmp_path / "out", expected_digest=info.digest)
    names = {path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*")}
    assert {"worker/__init__.py", "worker/handler.py", "worker/models/demo.py"} <= names
    assert not {f"worker/{name}" for name in IMAGE_FILES} & names
    assert not any("__pycache__" in name for name in names)
    assert all(not path.stat().st_mode & 0o111 for path in (tmp_path / "out").rglob("*.py"))


def test_a_directory_that_is_no_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PodenvError, match="not a Python package"):
        pack_code(tmp_path, tmp_path / "code.tar.zst")
