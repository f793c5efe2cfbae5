"""`podenv boot` where the machine misbehaves: a disk that fills while it installs, a root it
cannot write, credentials that must not outlive the boot, and the small holes of the command
line. Each ends in one line, a non-zero exit, a boot report where there is a volume, and
nothing half-written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.boot import SPACE_MARGIN
from podenv.channels import promote
from podenv.store import open_store
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    boot_argv,
    clean_environment,
    lease_files,
    listing,
    publish_release,
    reports,
    run,
    start,
    wait_for,
    wait_for_worker,
    write_small_env,
)


def _store(seaweed: SeaweedServer) -> str:
    return f"s3://{seaweed.bucket}/trust-{os.urandom(6).hex()}"


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("fetch ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("podenv: error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    """A release whose env is 24 MiB in 3,000 files."""
    work = tmp_path_factory.mktemp("wide")
    tree = write_small_env(work / "tree", "w1", files=2000)
    (tree / "blobs").mkdir()
    for index in range(1000):
        (tree / "blobs" / f"b{index:04d}.bin").write_bytes(os.urandom(24 << 10))
    return publish_release(_store(seaweed), "wide", "w1", [LayerSource("env", tree)], work)


DISK = 320 << 20
FILLER = """
import os, signal, sys, time
path, leave = sys.argv[1], int(sys.argv[2])
watch = sys.argv[3] if len(sys.argv) > 3 else None
frozen = None
if watch:
    frozen = int(sys.stdin.readline())  # the boot's process group, sent once it has started
    while not (os.path.isdir(watch) and os.listdir(watch)):
        time.sleep(0.001)
    os.killpg(frozen, signal.SIGSTOP)  # the boot waits, mid-install, until the disk is full
with open(path, "ab") as sink:
    while True:
        stat = os.statvfs(os.path.dirname(path))
        free = stat.f_bavail * stat.f_frsize
        if free > leave:
            try:
                sink.write(b"\\0" * min(free - leave, 8 << 20))
                sink.flush()
                continue
            except OSError:
                pass
        if frozen is not None:
            os.killpg(frozen, signal.SIGCONT)
            frozen = None
        time.sleep(0.005)
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real tmpfs of DISK bytes mounted for the test: the volume's filesystem."""
    mount = tmp_path / "disk"
    mount.mkdir()
    options = f"size={DISK // (1 << 20)}m"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root here: {mounted.stderr.decode()[-300:]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _filler(path: Path, leave: int, when: Path | None = None) -> subprocess.Popen[bytes]:
    """Another process that fills the disk until ``leave`` bytes are free, and keeps it so.
    With ``when``, it reads a process group from its stdin, and once that directory has an
    entry it stops the group, fills, and lets the group go on: the boot meets a full disk
    mid-install however fast it runs."""
    watch = [str(when)] if when is not None else []
    return subprocess.Popen(
        [sys.executable, "-c", FILLER, str(path), str(leave), *watch],
        stdin=subprocess.PIPE if when is not None else None,
    )


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_a_disk_filled_by_another_process_during_the_install_ends_in_one_line_and_a_report(
    wide: Published, small_disk: Path, env: dict[str, str]
) -> None:
    root = small_disk / "podenv"
    layer = wide.layer("env")
    # First the filler leaves just what the preflight asks (the layer and the margin); once
    # the boot is installing, it takes all but 1 MiB.
    room = layer.unpacked_size + SPACE_MARGIN + (8 << 20)
    first = _filler(small_disk / "filler-1", room)
    wait_for(lambda: _free(small_disk) <= room + (1 << 20), 30, "the first fill")
    first.kill()
    first.wait()
    second = _filler(small_disk / "filler-2", 1 << 20, when=root / "staging")
    boot = subprocess.Popen(
        boot_argv(root, wide.name, wide.store, ["--version", wide.version]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PODENV_WRITERS": "2"},
        start_new_session=True,  # its own process group, for the filler to stop and resume
    )
    assert second.stdin is not None
    second.stdin.write(f"{boot.pid}\n".encode())
    second.stdin.close()
    try:
        _, stderr = boot.communicate(timeout=120)
    finally:
        boot.kill()
        second.kill()
        second.wait()
    result = subprocess.CompletedProcess(boot.args, boot.returncode, "", stderr)

    assert result.returncode == 11, stderr[-3000:]
    line = _one_line_error(result)
    assert "the disk is full" in line and "podenv gc" in line
    assert listing(root / "staging") == [] and listing(root / "layers") == []
    assert lease_files(root) == []
    assert reports(root)[-1]["error"] == line.removeprefix("podenv: error: ")


def test_space_is_refused_before_the_download_on_a_small_disk(
    wide: Published, small_disk: Path, env: dict[str, str]
) -> None:
    root = small_disk / "podenv"
    filler = _filler(small_disk / "filler", wide.layer("env").unpacked_size)
    wait_for(lambda: _free(small_disk) <= wide.layer("env").unpacked_size + (1 << 20), 30, "the fill")
    filler.kill()
    filler.wait()
    result = run(boot_argv(root, wide.name, wide.store, ["--version", wide.version]), env)
    assert result.returncode == 11
    assert "not enough space" in _one_line_error(result)
    assert reports(root)[-1]["bytes_fetched"] == 0


@pytest.mark.parametrize("kind", ["read-only", "under-a-file"])
def test_a_root_that_cannot_be_written_is_one_line(kind: str, tmp_path: Path, env: dict[str, str]) -> None:
    if kind == "read-only":
        mount = tmp_path / "ro"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
        root = mount / "podenv"
    else:
        (tmp_path / "file").write_text("x")
        root = tmp_path / "file" / "podenv"
    try:
        result = run(boot_argv(root, "demo", "file:///nowhere", ["--version", "1"]), env)
    finally:
        if kind == "read-only":
            subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
    assert result.returncode == 11, result.stderr
    line = _one_line_error(result)
    assert str(root) in line


def test_credentials_are_absent_from_every_process_of_the_worker_tree(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    """The boot's store credentials (distinctive per run) are in no process's environment or
    command line once the worker runs: not the worker's, not its heartbeat's."""
    tree = write_small_env(tmp_path / "tree", "c1")
    release = publish_release(_store(seaweed), "creds", "c1", [LayerSource("env", tree)], tmp_path)
    root = tmp_path / "volume"
    worker = start(boot_argv(root, "creds", release.store, ["--version", "c1"], ["sleep", "60"]), env)
    try:
        wait_for_worker(worker, "sleep")
        tree_pids = _descendants(worker.pid) | {worker.pid}
        assert len(tree_pids) >= 2, "the worker and its heartbeat"
        secrets = [seaweed.access_key.encode(), seaweed.secret_key.encode()]
        leaking = {}
        for pid in tree_pids:
            for part in ("environ", "cmdline"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                if any(secret in data for secret in secrets):
                    leaking[pid] = (part, Path(f"/proc/{pid}/comm").read_text().strip())
        assert leaking == {}, f"credentials readable in /proc of {leaking}; worker tree {tree_pids}"
    finally:
        worker.kill()
        worker.wait()


def _descendants(pid: int) -> set[int]:
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with open(task / "children") as children:
                for child in children.read().split():
                    found.add(int(child))
                    pending.append(int(child))
    return found


# The small holes of the command line


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--version", ""], "argument --version: must not be empty"),
        (["--root", ""], "argument --root: must not be empty"),
        (["--quota", "ten"], "'ten' is not a size"),
    ],
)
def test_empty_or_malformed_options_are_refused(
    options: list[str], expected: str, tmp_path: Path, env: dict[str, str]
) -> None:
    result = run([*PODENV, "boot", "--env", "demo", "--store", "file:///x", *options], env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert not (Path.cwd() / "layers").exists()


def test_a_quota_may_be_written_with_a_unit(tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    root = tmp_path / "volume"
    result = run(boot_argv(root, "demo", f"file://{store}", ["--version", "1", "--quota", "10G"]), env)
    assert "not a size" not in result.stderr
    assert "release demo 1 does not exist" in _one_line_error(result)


def test_boot_exec_without_a_command_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    argv = [*PODENV, "boot", "--root", str(tmp_path / "v"), "--env", "demo", "--store", "file:///x", "--exec"]
    result = run(argv, env)
    assert result.returncode == 11
    assert "--exec names no command" in _one_line_error(result)


def test_a_newline_in_a_value_cannot_split_the_error(tmp_path: Path, env: dict[str, str]) -> None:
    result = run(boot_argv(tmp_path / "v", "demo\npodenv: forged line", "file:///x"), env)
    assert result.returncode != 0
    line = _one_line_error(result)
    assert "demo\\npodenv: forged line" in line


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "volume"
    for index in range(300):
        path = root / "boot-reports" / f"2026{index:04d}-h-1.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"env": "x", "filler": "y" * 30000}))
    command = f"{' '.join(PODENV)} status --root {root} | head -c 10"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env
    )
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr[-2000:]


def test_releases_of_an_unknown_env_and_history_of_an_unknown_channel_fail(
    tmp_path: Path, env: dict[str, str]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    releases = run([*PODENV, "releases", "nothing", "--store", f"file://{store}"], env)
    history = run([*PODENV, "history", "nothing", "--channel", "stable", "--store", f"file://{store}"], env)
    assert releases.returncode == 4 and "has no releases" in _one_line_error(releases)
    assert history.returncode == 4 and "does not exist" in _one_line_error(history)


def test_promoting_to_the_current_version_is_not_a_move(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    url = f"file://{store_dir}"
    for version in ("1.0.0", "2.0.0"):
        tree = write_small_env(tmp_path / f"t{version}", version, files=1)
        publish_release(url, "app", version, [LayerSource("env", tree)], tmp_path / f"w{version}")
    store = open_store(url)
    promote(store, "app", "1.0.0", "stable")
    moved = promote(store, "app", "2.0.0", "stable")
    again = promote(store, "app", "2.0.0", "stable")  # a re-run publish

    assert again == moved
    result = run([*PODENV, "rollback", "app", "--channel", "stable", "--store", url], clean_environment())
    assert result.returncode == 0, result.stderr
    assert "2.0.0 -> 1.0.0" in result.stdout
