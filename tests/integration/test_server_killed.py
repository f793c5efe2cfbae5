"""The store's server killed mid-download: its own SeaweedFS (not the session's, which other
tests share), killed as a process group while a cold boot is fetching a layer from it."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from tests.integration.boot_support import (
    LayerSource,
    boot_argv,
    clean_environment,
    lease_files,
    listing,
    publish_release,
    wait_for,
    write_small_env,
)

# Larger than what the reader keeps in flight (2 x 8 ranges of 8 MiB), so that the boot
# cannot have the whole blob in memory when the server dies.
BIG = 192 << 20
DEADLINE = 30
SETTINGS = {
    "PODENV_STORE_ATTEMPTS": "3",
    "PODENV_STORE_READ_TIMEOUT": "3",
    "PODENV_STORE_DEADLINE": str(DEADLINE),
}


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path / "seaweed").start()
    try:
        yield server
    finally:
        server.stop()


def _files_in(directory: Path) -> bool:
    return any(path.is_file() for path in directory.rglob("*")) if directory.is_dir() else False


def test_a_store_server_killed_mid_download_ends_the_boot_in_one_line_naming_the_network(
    own_seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in own_seaweed.environment.items():
        monkeypatch.setenv(name, value)
    tree = write_small_env(tmp_path / "tree", "k1")
    (tree / "share" / "weights.bin").write_bytes(os.urandom(BIG))  # incompressible
    store = f"s3://{own_seaweed.bucket}/killed"
    release = publish_release(store, "killed", "k1", [LayerSource("env", tree)], tmp_path / "work")
    (tmp_path / "work" / "killed-k1-env.tar.zst").unlink()
    root = tmp_path / "volume"
    environment = clean_environment({**own_seaweed.environment, **SETTINGS})
    boot = subprocess.Popen(
        boot_argv(root, "killed", release.store, ["--version", "k1"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )
    try:
        # The first bytes are being written: the boot (and any process it started) is held
        # still while the server dies, so the kill lands mid-download however fast loopback is.
        wait_for(lambda: _files_in(root / "staging"), 120, "the download to start", boot)
        os.killpg(boot.pid, signal.SIGSTOP)
        assert own_seaweed.process is not None
        os.killpg(own_seaweed.process.pid, signal.SIGKILL)
        own_seaweed.process.wait()
        resumed = time.monotonic()
        os.killpg(boot.pid, signal.SIGCONT)
        _, stderr = boot.communicate(timeout=DEADLINE + 60)
        seconds = time.monotonic() - resumed
    finally:
        if boot.poll() is None:
            os.killpg(boot.pid, signal.SIGKILL)
            boot.wait()

    assert boot.returncode == 11, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("fetch ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    line = lines[0]
    assert line.startswith("podenv: error: ") and "needs the store and it failed" in line, line
    assert "could not be connected to" in line or "dropped the connection" in line, line
    assert "corrupt" not in line
    assert seconds < DEADLINE, seconds
    assert lease_files(root) == []
    assert listing(root / "staging") == [] and listing(root / "layers") == []
