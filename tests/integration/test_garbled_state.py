"""Garbled state read as untrusted input: markers, channel caches and blob caches on the volume,
pointers and releases in the store. Each gives one line (never a traceback), and what the
volume holds is repaired by the next boot instead of failing for ever."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.store import open_store
from podenv.volume import MARKER, RELEASE_MARKER
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    boot_argv,
    closed_port,
    publish_release,
    reports,
    run,
    write_small_env,
)

GARBLE = {
    "truncated": lambda text: text[: len(text) // 2],
    "wrong-types": lambda text: json.dumps({**json.loads(text), "files": "many", "layers": "all"}),
    "not-an-object": lambda text: "[1, 2, 3]",
    "binary": lambda text: "\udcff\udcfe garbage",
    "empty": lambda text: "",
}


@pytest.fixture
def release(seaweed: SeaweedServer, tmp_path: Path, s3env) -> Published:
    tree = write_small_env(tmp_path / "tree", "g1")
    store = f"s3://{seaweed.bucket}/garbled-{os.urandom(6).hex()}"
    return publish_release(store, "garbled", "g1", [LayerSource("env", tree)], tmp_path, channel="stable")


def _boot(release: Published, root: Path, env: dict[str, str], pinned: bool = True):
    options = ["--version", release.version] if pinned else []
    return run(boot_argv(root, release.name, release.store, options, ["hello"]), env)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("fetch ")]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("podenv: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _write_garbled(path: Path, how: str) -> None:
    text = path.read_text()
    path.unlink()
    path.write_bytes(GARBLE[how](text).encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("how", list(GARBLE))
@pytest.mark.parametrize("which", ["layer", "release"])
def test_a_garbled_marker_is_repaired_by_the_next_boot(
    which: str, how: str, release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert _boot(release, root, env).stdout.strip() == "hello-from-g1"
    layer_dir = root / "layers" / release.layer("env").digest.removeprefix("sha256:")
    marker = layer_dir / MARKER if which == "layer" else root / "releases" / "garbled" / "g1" / RELEASE_MARKER
    _write_garbled(marker, how)

    for command in (["status"], ["gc", "--keep", "5"]):
        looked = run([*PODENV, command[0], "--root", str(root), *command[1:]], env)
        assert looked.returncode == 0 and "Traceback" not in looked.stderr, looked.stderr[-2000:]
    repaired = _boot(release, root, env)

    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert repaired.stdout.strip() == "hello-from-g1"
    last = reports(root)[-1]
    assert not last["warm"]
    if which == "layer":  # a garbled release view is removed by gc already (no boot needs it)
        assert any("garbled marker" in warning for warning in last["warnings"])
    assert json.loads(marker.read_text())["digest"].startswith("sha256:")
    assert _boot(release, root, env).returncode == 0 and reports(root)[-1]["warm"]


@pytest.mark.parametrize("shape", ["directory", "link", "fifo"])
def test_a_marker_that_is_not_a_file_reads_as_absent(
    shape: str, release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert _boot(release, root, env).returncode == 0
    marker = root / "layers" / release.layer("env").digest.removeprefix("sha256:") / MARKER
    marker.unlink()
    {
        "directory": marker.mkdir,
        "link": lambda: marker.symlink_to("/dev/zero"),
        "fifo": lambda: os.mkfifo(marker),
    }[shape]()

    repaired = run(boot_argv(root, "garbled", release.store, ["--version", "g1"], ["hello"]), env, timeout=60)

    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert repaired.stdout.strip() == "hello-from-g1"


@pytest.mark.parametrize("how", ["truncated", "not-an-object", "binary"])
def test_a_garbled_channel_cache_offline_is_one_line_and_online_is_replaced(
    how: str, release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert _boot(release, root, env, pinned=False).returncode == 0
    cache = root / "channels" / "garbled" / "stable.json"
    _write_garbled(cache, how)
    (root / "releases" / "garbled" / "g1" / RELEASE_MARKER).unlink()  # not warm: the channel decides

    offline = _boot(
        release, root, {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}, pinned=False
    )
    assert offline.returncode != 0
    assert "is not a channel pointer" in _one_line(offline)

    online = _boot(release, root, env, pinned=False)
    assert online.returncode == 0, online.stderr[-3000:]
    assert json.loads(cache.read_text())["version"] == "g1"


@pytest.mark.parametrize(
    "pointer",
    [b"[]", b"{not json", json.dumps({"version": "../../etc", "digest": "sha256:" + "0" * 64}).encode()],
    ids=["list", "broken", "escaping-version"],
)
def test_a_garbled_pointer_in_the_store_is_one_line_and_never_cached(
    pointer: bytes, release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    store = open_store(release.store)
    current = store.read_channel("garbled", "stable")
    store.write_channel("garbled", "stable", pointer, expected=current)
    root = tmp_path / "volume"

    result = _boot(release, root, env, pinned=False)

    assert result.returncode != 0
    assert "is not a channel pointer" in _one_line(result)
    assert not (root / "channels" / "garbled" / "stable.json").exists()


def test_a_deeply_nested_release_is_one_line(release: Published, tmp_path: Path, env: dict[str, str]) -> None:
    store = open_store(release.store)
    store.put_release("garbled", "deep", b"[" * 100_000 + b"]" * 100_000)

    result = run(boot_argv(tmp_path / "volume", "garbled", release.store, ["--version", "deep"]), env)

    assert result.returncode == 9
    assert "nested too deeply" in _one_line(result)


def test_a_release_whose_content_names_another_version_is_refused(
    release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    open_store(release.store).put_release("garbled", "g2", release.manifest.canonical_bytes())

    result = run(boot_argv(tmp_path / "volume", "garbled", release.store, ["--version", "g2"]), env)

    assert result.returncode == 7
    assert "names itself garbled g1" in _one_line(result)
    assert not (tmp_path / "volume" / "releases" / "garbled" / "g2").exists()


def test_a_corrupt_cached_blob_is_removed_and_the_layer_fetched_from_the_store(
    release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert _boot(release, root, env).returncode == 0
    digest = release.layer("env").digest
    blob = root / "blobs" / digest.removeprefix("sha256:")
    blob.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(release.archives["env"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))  # the same size: trusted by its size before
    for installed in ("layers", "releases"):
        shutil.rmtree(root / installed)  # as if gc had freed them

    repaired = _boot(release, root, env)

    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert repaired.stdout.strip() == "hello-from-g1"
    last = reports(root)[-1]
    assert any("cached blob of layer env was corrupt" in warning for warning in last["warnings"])
    assert last["layers"]["env"] == "installed" and last["bytes_fetched"] > 0
    assert not blob.exists()


PLACEHOLDER = "/opt/" + "placehold_" * 10


def test_verify_rehashes_an_installed_layer_against_its_archive(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    """Relocated files compare equal (relocated in memory); a changed and an added file do not."""
    tree = write_small_env(tmp_path / "tree", "v1")
    (tree / "bin" / "tool").write_text(f"#!{PLACEHOLDER}/bin/python\n")
    (tree / "conda-meta").mkdir()
    relocations = {"prefixes": [["bin/tool", PLACEHOLDER, "text"]]}
    (tree / "conda-meta" / "podenv-relocations.json").write_text(json.dumps(relocations))
    (tree / "lib").mkdir()
    (tree / "lib" / "link").symlink_to("../VERSION")
    store = f"s3://{seaweed.bucket}/verify-{os.urandom(6).hex()}"
    release = publish_release(store, "verified", "v1", [LayerSource("env", tree)], tmp_path / "w")
    root = tmp_path / "volume"
    assert _boot(release, root, env).returncode == 0
    layer_dir = root / "layers" / release.layer("env").digest.removeprefix("sha256:")
    assert PLACEHOLDER not in (layer_dir / "bin" / "tool").read_text()
    verify = [
        *PODENV,
        "verify",
        "--root",
        str(root),
        "--env",
        "verified",
        "--version",
        "v1",
        "--store",
        store,
    ]

    clean = run(verify, env)
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert clean.stdout.startswith("OK   layer env")

    (layer_dir / "share" / "data-001.txt").write_text("changed\n")
    (layer_dir / "share" / "planted.txt").write_text("x\n")
    changed = run(verify, env)
    assert changed.returncode == 7, changed.stderr[-2000:]
    assert "2 differences" in changed.stdout
    assert "share/data-001.txt: content differs" in changed.stdout
    assert "share/planted.txt: not in the layer" in changed.stdout


def test_gc_removes_garbled_directories_nothing_uses(
    release: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert _boot(release, root, env).returncode == 0
    layer_dir = root / "layers" / release.layer("env").digest.removeprefix("sha256:")
    view = root / "releases" / "garbled" / "g1"
    _write_garbled(view / RELEASE_MARKER, "truncated")
    _write_garbled(layer_dir / MARKER, "truncated")

    gc = run([*PODENV, "gc", "--root", str(root), "--keep", "5"], env)

    assert gc.returncode == 0, gc.stderr
    assert not view.exists() and not layer_dir.exists()
