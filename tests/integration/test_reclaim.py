"""What dead installers leave is reclaimed as soon as they are provably dead and counted against
the quota meanwhile; gc never pulls a layer from under a live boot and judges each worker by the
liveness it recorded; kept blobs are pruned with their releases."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from devkit.faultproxy import Fault, FaultProxy
from devkit.seaweed import SeaweedServer
from podenv.boot import SPACE_MARGIN
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    boot_argv,
    lease_files,
    listing,
    publish_release,
    report_of,
    run,
    start,
    wait_for,
    wait_for_worker,
    write_small_env,
    write_tiny_model,
)


def _store(seaweed: SeaweedServer) -> str:
    return f"s3://{seaweed.bucket}/reclaim-{os.urandom(6).hex()}"


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _staging(root: Path, host: str, pid: int, size: int, age: float = 0) -> Path:
    path = root / "staging" / f"0123456789abcdef@{host}@{pid}@deadbeef"
    (path / "layer").mkdir(parents=True)
    (path / "layer" / "partial.bin").write_bytes(os.urandom(size))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


@pytest.fixture
def small(seaweed: SeaweedServer, tmp_path: Path, s3env) -> Published:
    tree = write_small_env(tmp_path / "tree", "r1")
    return publish_release(_store(seaweed), "reclaim", "r1", [LayerSource("env", tree)], tmp_path)


def test_a_dead_installers_staging_and_lease_are_reclaimed_by_the_next_boot(
    small: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    here, dead = socket.gethostname(), _dead_pid()
    mine = _staging(root, here, dead, 4 << 20)
    elsewhere_old = _staging(root, "other-host", 7, 1 << 20, age=600)
    elsewhere_live = root / "staging" / "fedcba9876543210@other-host@8@cafecafe"
    elsewhere_live.mkdir(parents=True)
    lease = root / "leases" / f"{small.layer('env').digest.removeprefix('sha256:')}.lease"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"host": here, "pid": dead, "since": time.time(), "timeout": 600}))

    started = time.monotonic()
    result = run(boot_argv(root, "reclaim", small.store, ["--version", "r1", "--lease-timeout", "300"]), env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 60  # the dead holder's fresh lease was not waited for
    assert not mine.exists() and not elsewhere_old.exists()
    assert elsewhere_live.exists()  # young, and maybe alive: only its lease timeout will tell
    assert lease_files(root) == []


def test_the_quota_counts_staging_and_kept_blobs(
    small: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    layer = small.layer("env")
    quota = layer.unpacked_size + SPACE_MARGIN + (4 << 20)
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / ("f" * 64)).write_bytes(os.urandom(6 << 20))

    refused = run(boot_argv(root, "reclaim", small.store, ["--version", "r1", "--quota", str(quota)]), env)

    assert refused.returncode == 11 and "not enough space" in refused.stderr, refused.stderr[-2000:]


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy(urlparse(seaweed.endpoint).port or 0) as running:
        yield running


def test_gc_while_a_cold_boot_installs_a_multi_layer_release_lets_the_boot_complete(
    seaweed: SeaweedServer, proxy: FaultProxy, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    """The first layers are installed, the last one is still arriving (slowly, through the
    proxy) while gc runs again and again: the boot completes with every layer in place."""
    env_tree = write_small_env(tmp_path / "env", "m1")
    model = write_tiny_model(tmp_path / "model")
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "weights.bin").write_bytes(os.urandom(6 << 20))
    layers = [
        LayerSource("env", env_tree),
        LayerSource("tiny", model, "model", "hf-hub"),
        LayerSource("slow", slow, "model", "torch-hub"),
    ]
    release = publish_release(_store(seaweed), "multi", "m1", layers, tmp_path / "work")
    root = tmp_path / "volume"
    proxy.set_fault(
        Fault("trickle", after=1 << 20, times=None, trickle_bytes=64 << 10, trickle_interval=0.05)
    )
    boot_env = {**env, "AWS_ENDPOINT_URL": proxy.endpoint}
    boot = start(boot_argv(root, "multi", release.store, ["--version", "m1"], ["true"]), boot_env)
    try:
        wait_for(lambda: len(listing(root / "layers")) >= 2, 120, "the first layers", boot)
        collected = 0
        while boot.poll() is None:
            gc = run([*PODENV, "gc", "--root", str(root), "--keep", "0", "--lease-timeout", "1"], env)
            assert gc.returncode == 0, gc.stderr[-2000:]
            collected += 1
        _, stderr = boot.communicate()
    finally:
        boot.kill()
    assert boot.returncode == 0, stderr[-3000:]
    assert collected >= 1 and proxy.injected >= 1
    # (gc --keep 0 may free it all once the worker has ended: the boot's report tells.)
    assert report_of(root, boot.pid)["layers"] == {
        "env": "installed",
        "tiny": "installed",
        "slow": "installed",
    }


def test_gc_judges_a_worker_by_the_liveness_it_recorded(
    small: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    argv = boot_argv(
        root, "reclaim", small.store, ["--version", "r1", "--lease-timeout", "90"], ["sleep", "60"]
    )
    worker = start(argv, env)
    try:
        wait_for_worker(worker, "sleep")
        in_use = next((root / "in-use").glob("reclaim/r1/*"))
        os.utime(in_use, (time.time() - 20, time.time() - 20))  # silent for 20 s: within its 90
        gc = run([*PODENV, "gc", "--root", str(root), "--keep", "0", "--lease-timeout", "5"], env)
        assert gc.returncode == 0, gc.stderr
        assert listing(root / "releases" / "reclaim") == ["r1"]
        assert in_use.exists()
    finally:
        worker.kill()
        worker.wait()


def test_gc_prunes_kept_blobs_with_their_releases(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    store = _store(seaweed)
    releases = [
        publish_release(
            store, "blobs", v, [LayerSource("env", write_small_env(tmp_path / v, v))], tmp_path / "w"
        )
        for v in ("b1", "b2")
    ]
    root = tmp_path / "volume"
    for release in releases:
        result = run(boot_argv(root, "blobs", store, ["--version", release.version, "--keep-blobs"]), env)
        assert result.returncode == 0, result.stderr[-2000:]
        time.sleep(1.1)  # recency is the release marker's mtime
    assert len(listing(root / "blobs")) == 2

    gc = run([*PODENV, "gc", "--root", str(root), "--keep", "1"], env)

    assert gc.returncode == 0, gc.stderr
    assert listing(root / "blobs") == [releases[1].layer("env").digest.removeprefix("sha256:")]


# `podenv boot --exec` with a gc of everything (`--keep 0`) run elsewhere at the worst moment:
# after the install has ended (its installing/ claim dropped) and before the exec.
_GC_BEFORE_EXEC = """
import subprocess, sys
import podenv.boot
from podenv.cli import main

gc = [sys.executable, "-m", "podenv.cli", "gc", "--root", sys.argv[1], "--keep", "0", "--lease-timeout", "1"]
prepared = podenv.boot.prepare

def prepare_then_gc(*args, **kwargs):
    ready = prepared(*args, **kwargs)
    subprocess.run(gc, check=True)
    return ready

def exec_into(ready, command):
    print("WORKER-SEES", (ready.directory / "release.json").is_file(), ready.env_prefix.is_dir())
    sys.exit(0)

podenv.boot.prepare = prepare_then_gc
podenv.boot.exec_into = exec_into
sys.exit(main(sys.argv[2:]))
"""


def test_gc_between_the_end_of_the_install_and_the_exec_keeps_the_release(
    small: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    argv = boot_argv(root, "reclaim", small.store, ["--version", "r1"], ["true"])
    result = run([sys.executable, "-c", _GC_BEFORE_EXEC, str(root), *argv[len(PODENV) :]], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WORKER-SEES True True" in result.stdout, result.stdout[-2000:]
    assert listing(root / "releases" / "reclaim") == ["r1"]
