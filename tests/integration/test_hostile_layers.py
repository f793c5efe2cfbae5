"""Hostile layers, published through a real release to SeaweedFS and booted by real `podenv boot`
processes: a layer whose digest is right but whose content attacks the boot. Each is refused in
one line (exit 8, UnsafeArchiveError), with a boot report, nothing written outside the root,
nothing left in layers/ or staging/, no lease held, and bounded memory."""

import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.archive import pack_tree
from podenv.volume import MARKER
from tests.functional.test_archive_extract import build_tar_zst, file_member
from tests.functional.test_archive_limits import _zst_with_big_header
from tests.integration.boot_support import (
    PODENV,
    boot_argv,
    lease_files,
    listing,
    publish_archive,
    reports,
    run,
    write_small_env,
)

PLACEHOLDER = "/opt/" + "placehold_" * 10
UNSAFE = 8
# `podenv boot` in a wrapper that prints the process's peak memory (KiB) on stdout at the end.
MEASURED = [
    sys.executable,
    "-c",
    "import sys\n"
    "from podenv.cli import main\n"
    "code = main(sys.argv[1:])\n"
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's across fork+exec.
    "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "print(f'maxrss_kib={peak}')\n"
    "sys.exit(code)\n",
]


def _store(seaweed: SeaweedServer) -> str:
    return f"s3://{seaweed.bucket}/hostile-{os.urandom(6).hex()}"


def _pack(tree: Path, archive: Path) -> dict[str, int]:
    info = pack_tree(tree, archive)
    return {"unpacked_size": info.unpacked_size, "files": info.files}


def _boot(store: str, version: str, root: Path, env: dict[str, str], timeout: float = 120):
    argv = boot_argv(root, "hostile", store, ["--version", version], ["true"])
    argv = [*MEASURED, *argv[len(PODENV) :]]
    return run(argv, env, timeout=timeout)


def _assert_refused(result, root: Path, *phrases: str) -> int:
    """Refused in one line naming ``phrases``; nothing kept; returns the peak memory in MiB."""
    assert result.returncode == UNSAFE, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("fetch ")]  # progress lines may precede
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("podenv: error: ")
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert "Traceback" not in result.stderr and "callback" not in result.stderr
    assert listing(root / "layers") == [] and listing(root / "staging") == []
    assert lease_files(root) == []
    assert listing(root / "releases" / "hostile") == []
    assert reports(root)[-1]["error"] == errors[0].removeprefix("podenv: error: ")
    return int(result.stdout.strip().rsplit("maxrss_kib=", 1)[1]) // 1024


def _relocating_env(tmp_path: Path, entries: list[list[str]]) -> Path:
    tree = write_small_env(tmp_path / "tree", "h1")
    (tree / "conda-meta").mkdir()
    (tree / "conda-meta" / "podenv-relocations.json").write_text(json.dumps({"prefixes": entries}))
    return tree


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "through-a-link"])
def test_a_relocation_list_escaping_the_layer_is_refused(
    how: str, seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text(f"{PLACEHOLDER}/bin/python\n")
    before = victim.stat()
    path = {
        "dot-dot": "../" * 8 + str(victim).lstrip("/"),
        "absolute": str(victim),
        "through-a-link": "up/victim.txt",
    }[how]
    tree = _relocating_env(tmp_path, [["VERSION", PLACEHOLDER, "text"], [path, PLACEHOLDER, "text"]])
    if how == "through-a-link":
        (tree / "up").symlink_to("share")  # inside the layer: the reader lets it through
        (tree / "share" / "victim.txt").write_text(f"{PLACEHOLDER}\n")
    store = _store(seaweed)
    archive = tmp_path / "layer.tar.zst"
    published = publish_archive(store, "hostile", "r1", archive, _pack(tree, archive))
    root = tmp_path / "volume"

    result = _boot(store, published.version, root, env)

    _assert_refused(result, root, "relocation list", path[:40])
    assert victim.read_text() == f"{PLACEHOLDER}/bin/python\n"
    assert victim.stat().st_mtime_ns == before.st_mtime_ns


def test_a_relocation_entry_naming_a_fifo_is_refused_without_hanging(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    tree = _relocating_env(tmp_path, [[str(fifo), PLACEHOLDER, "binary"]])
    store = _store(seaweed)
    archive = tmp_path / "layer.tar.zst"
    publish_archive(store, "hostile", "f1", archive, _pack(tree, archive))
    root = tmp_path / "volume"

    result = _boot(store, "f1", root, env, timeout=60)

    _assert_refused(result, root, "relocation list", str(fifo))


@pytest.mark.parametrize("shape", ["directory", "link", "file"])
def test_a_layer_carrying_the_marker_name_is_refused(
    shape: str, seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    tree = write_small_env(tmp_path / "tree", "m1")
    marker = tree / MARKER
    if shape == "directory":
        (marker / "inner").mkdir(parents=True)
        (marker / "inner" / "x").write_text("x")
    elif shape == "link":
        marker.symlink_to("VERSION")
    else:
        marker.write_text(json.dumps({"digest": "sha256:" + "0" * 64, "files": 1, "bytes": 1}))
    store = _store(seaweed)
    archive = tmp_path / "layer.tar.zst"
    publish_archive(store, "hostile", "m1", archive, _pack(tree, archive))
    root = tmp_path / "volume"

    result = _boot(store, "m1", root, env)

    _assert_refused(result, root, MARKER, "podenv's own marker")
    assert (tree / "VERSION").read_text() == "m1\n"


@pytest.mark.parametrize("excess", ["files", "unpacked_size"])
def test_a_layer_holding_more_than_it_declares_is_refused_while_extracting(
    excess: str, seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    tree = write_small_env(tmp_path / "tree", "x1", files=400)
    store = _store(seaweed)
    archive = tmp_path / "layer.tar.zst"
    declared = _pack(tree, archive)
    declared[excess] = declared[excess] // 2
    publish_archive(store, "hostile", "x1", archive, declared)
    root = tmp_path / "volume"

    result = _boot(store, "x1", root, env)

    noun = "files" if excess == "files" else "bytes"
    _assert_refused(result, root, f"more than the {declared[excess]} {noun} it declares")


def test_a_tiny_blob_with_a_huge_pax_header_is_refused_in_bounded_memory(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    archive = tmp_path / "bomb.tar.zst"
    archive.write_bytes(_zst_with_big_header(tarfile.XHDTYPE, 1 << 30))
    assert archive.stat().st_size < 1 << 20
    store = _store(seaweed)
    publish_archive(store, "hostile", "p1", archive)
    root = tmp_path / "volume"

    result = _boot(store, "p1", root, env)

    peak_mib = _assert_refused(result, root, "extended header of 1073741824 bytes")
    assert peak_mib < 256, f"peak memory {peak_mib} MiB for a 1 GiB header"


def test_a_refusal_after_thousands_of_queued_files_prints_one_line(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    members = [file_member(f"many/f{index:05d}", b"y" * 2048) for index in range(5000)]
    members.append(file_member("../escape", b"z"))
    archive = tmp_path / "queued.tar.zst"
    archive.write_bytes(build_tar_zst(members))
    store = _store(seaweed)
    publish_archive(store, "hostile", "q1", archive, {"unpacked_size": 5001 * 2048, "files": 5001})
    root = tmp_path / "volume"
    env = {**env, "PODENV_WRITERS": "1"}

    result = _boot(store, "q1", root, env)

    _assert_refused(result, root, "'../escape'", "contains '..'")
    assert not (tmp_path / "escape").exists() and not (root / "escape").exists()
