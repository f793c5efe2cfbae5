"""`podenv boot` end to end: real `podenv` processes, a real volume directory, the real S3 server.

Two kinds of release: the demo project built by Snakemake (a relocatable CPython with `six`
and `greeting`, and a model), and synthetic ones published with the library, among them a
big one (20,000 small files and a 150 MB random file) for concurrency and kills.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from functools import partial
from pathlib import Path

import pytest

from devkit.demoproject import build_channel_dir, create_project
from devkit.seaweed import SeaweedServer
from podenv.boot import SPACE_MARGIN
from podenv.channels import promote
from podenv.progress import human_bytes
from podenv.store import open_store
from tests.integration.boot_support import (
    BIG_FILE,
    PODENV,
    REPOSITORY,
    LayerObserver,
    LayerSource,
    Published,
    boot_argv,
    clean_environment,
    closed_port,
    complete_layers,
    corrupt_blob,
    count_entries,
    delete_blob,
    lease_files,
    listing,
    publish_release,
    report_of,
    reports,
    run,
    start,
    wait_for,
    wait_for_worker,
    write_big_env,
    write_small_env,
    write_tiny_model,
)
from tests.integration.pipeline_support import snakemake

BIG_SIZE = 150 << 20
BIG_DIRECTORIES, BIG_PER_DIRECTORY = 20, 1000
# Prints the env's file count (links included, the layer marker not) and its bytes of content.
COUNT_FILES = [
    "sh",
    "-c",
    'find "$CONDA_PREFIX/" ! -type d ! -name .podenv-layer.json | wc -l; '
    'find "$CONDA_PREFIX/" -type f ! -name .podenv-layer.json -printf "%s\\n"'
    " | awk '{s+=$1} END {print s}'",
]


def fresh_store(seaweed: SeaweedServer) -> str:
    return f"s3://{seaweed.bucket}/boot-{uuid.uuid4().hex[:12]}"


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")


def offline(environment: dict[str, str]) -> dict[str, str]:
    """The same credentials, but the endpoint is a closed port: the store is unreachable."""
    return {**environment, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}


@pytest.fixture(scope="module")
def real_release(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> dict[str, str]:
    """The demo project published by `snakemake publish`, as test_pipeline.py builds it."""
    store = fresh_store(seaweed)
    channel_dir = tmp_path_factory.mktemp("channel")
    build_channel_dir(channel_dir)
    project = create_project(tmp_path_factory.mktemp("project"), REPOSITORY, store, channel_dir)
    result = snakemake(project, "publish")
    assert result.returncode == 0, result.stderr[-3000:]
    receipt = json.loads((project / "build/demo/published.json").read_text())
    return {"store": store, "name": "demo", "version": receipt["version"], "digest": receipt["digest"]}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    work = tmp_path_factory.mktemp("big")
    files = write_big_env(work / "tree", BIG_DIRECTORIES, BIG_PER_DIRECTORY, BIG_SIZE)
    published = publish_release(
        fresh_store(seaweed), "big", "1", [LayerSource("env", work / "tree")], work, channel="stable"
    )
    assert published.layer("env").files == files
    shutil.rmtree(work / "tree")
    return published


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> dict[str, Published]:
    """Releases v1, v2, v3 of `small`: a different env each, one model they share; stable -> v2."""
    work = tmp_path_factory.mktemp("small")
    store = fresh_store(seaweed)
    model = write_tiny_model(work / "model")
    releases = {}
    for version in ("v1", "v2", "v3"):
        env_tree = write_small_env(work / f"env-{version}", version)
        layers = [LayerSource("env", env_tree), LayerSource("tiny", model, "model", "hf-hub")]
        releases[version] = publish_release(store, "small", version, layers, work)
    promote(open_store(store), "small", "v2", "stable")
    return releases


def boot_release(
    release: Published, root: Path, environment: dict[str, str], *options: str, command=None, pinned=True
) -> subprocess.CompletedProcess[str]:
    pin = ["--version", release.version] if pinned else []
    return run(boot_argv(root, release.name, release.store, [*pin, *options], command), environment)


# 1. Concurrency


def test_sixteen_simultaneous_boots_download_each_layer_once(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    layer = big.layer("env")
    argv = boot_argv(root, big.name, big.store, ["--channel", "stable"], COUNT_FILES)

    processes = [start(argv, env) for _ in range(16)]
    outputs = [process.communicate(timeout=300) for process in processes]

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        assert out.split() == [str(layer.files), str(layer.unpacked_size)], "an incomplete env was seen"
    boots = [report_of(root, process.pid) for process in processes]
    states = [boot["layers"]["env"] for boot in boots]
    assert states.count("installed") == 1, states
    assert set(states) <= {"installed", "waited", "present"}, states
    assert sum(boot["bytes_fetched"] for boot in boots) == layer.size
    marker = complete_layers(root)[hex_of(layer.digest)]
    # Every boot had started before the one install was complete: they did run at the same time.
    assert max(boot["started"] for boot in boots) < marker["installed_at"]
    assert listing(root / "staging") == []
    assert lease_files(root) == []


# 2. Kills


def _staged_layer(root: Path, digest: str, pid: int) -> Path | None:
    """The layer directory that boot ``pid`` is filling in its private staging directory."""
    for name in listing(root / "staging"):
        if name.startswith(hex_of(digest)[:16]) and f"@{pid}@" in name:
            return root / "staging" / name / "layer"
    return None


def _downloading(root: Path, digest: str, pid: int) -> dict[str, int] | None:
    """The blob is streaming in: the big file (first in the archive) is partly written, no small
    file exists yet."""
    layer = _staged_layer(root, digest, pid)
    if layer is None:
        return None
    try:
        size = (layer / BIG_FILE).stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
    if 0 < size < BIG_SIZE and not (layer / "files").exists():
        return {"big_file_bytes": size}
    return None


def _extracting(root: Path, digest: str, pid: int) -> dict[str, int] | None:
    """Thousands of the small files are written, not all of them."""
    layer = _staged_layer(root, digest, pid)
    if layer is None:
        return None
    try:
        directories = listing(layer / "files")
        if len(directories) < 5:
            return None
        files = sum(len(os.listdir(layer / "files" / name)) for name in directories)
    except FileNotFoundError:
        return None
    return {"small_files": files} if 3000 <= files < BIG_DIRECTORIES * BIG_PER_DIRECTORY else None


def test_boots_killed_while_downloading_and_while_extracting_leave_nothing_a_later_boot_uses(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    layer = big.layer("env")
    # Each next boot takes the dead one's lease over once it is 2 s silent.
    argv = boot_argv(root, big.name, big.store, ["--version", big.version, "--lease-timeout", "2"])
    leftovers = []

    with LayerObserver(root) as observer:
        for phase, reached in (("download", _downloading), ("extraction", _extracting)):
            process = start(argv, env)
            try:
                phase_reached = partial(reached, root, layer.digest, process.pid)
                state = wait_for(phase_reached, 120, f"the {phase} phase", process)
            finally:
                process.kill()  # SIGKILL: no cleanup of any kind runs
                process.communicate()
            assert process.returncode == -signal.SIGKILL
            staged = _staged_layer(root, layer.digest, process.pid)
            assert staged is not None, phase
            killed = {"phase": phase, "observed": state, "left_in_staging": count_entries(staged)}
            assert listing(root / "layers") == [], killed
            assert 0 < count_entries(staged) < layer.files, killed
            leftovers.append(staged.parent.name)

        result = run([*argv, "--exec", "--", *COUNT_FILES], env)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(layer.files), str(layer.unpacked_size)]
    (report,) = reports(root)  # the killed boots wrote none
    assert report["layers"] == {"env": "installed"} and report["bytes_fetched"] == layer.size
    assert list(complete_layers(root)) == [hex_of(layer.digest)]
    # The dead boots' work was never used, and the next boot reclaimed it (volume.reclaim_dead).
    assert leftovers and listing(root / "staging") == []
    assert observer.unmarked == []
    assert observer.polls > 100 and observer.seen == {hex_of(layer.digest)}


# 3. Corruption


def test_a_corrupted_blob_is_refused_naming_the_layer_and_both_digests(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    tree = write_small_env(tmp_path / "tree", "c1", files=2000)
    (tree / "random.bin").write_bytes(os.urandom(4 << 20))
    release = publish_release(fresh_store(seaweed), "corrupt", "c1", [LayerSource("env", tree)], tmp_path)
    expected = release.layer("env").digest
    actual = corrupt_blob(s3env, release.store, expected)
    root = tmp_path / "volume"

    result = boot_release(release, root, env, "--keep-blobs", command=["true"])

    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("podenv: error: layer env ")
    assert expected in message and actual in message
    assert listing(root / "layers") == []
    assert listing(root / "staging") == []
    assert listing(root / "blobs") == []
    assert lease_files(root) == []
    assert listing(root / "releases" / "corrupt") == []


# 4. Space


def test_not_enough_space_is_refused_before_a_byte_is_fetched(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    tree = write_small_env(tmp_path / "tree", "q1")
    (tree / "random.bin").write_bytes(os.urandom(1 << 20))
    release = publish_release(fresh_store(seaweed), "quota", "q1", [LayerSource("env", tree)], tmp_path)
    layer = release.layer("env")
    quota = layer.unpacked_size // 2
    # Without its blob, any attempt to download would fail with "does not exist" instead.
    delete_blob(s3env, release.store, layer.digest)
    root = tmp_path / "volume"

    started = time.monotonic()
    refused = boot_release(release, root, env, "--quota", str(quota))
    seconds = time.monotonic() - started

    assert refused.returncode != 0
    assert "not enough space" in refused.stderr and "does not exist" not in refused.stderr
    assert human_bytes(layer.unpacked_size) in refused.stderr and human_bytes(quota) in refused.stderr
    assert listing(root / "staging") == [] and listing(root / "layers") == []
    assert lease_files(root) == []
    assert all(boot["bytes_fetched"] == 0 for boot in reports(root))
    assert seconds < 30

    # With the blob back and room for the layer and the margin, the same boot goes through.
    open_store(release.store).put_blob(release.archives["env"], layer.digest)
    enough = layer.unpacked_size + SPACE_MARGIN + (1 << 20)
    result = boot_release(release, root, env, "--quota", str(enough), command=["hello"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello-from-q1"


# 5. Leases


def _lease_file(root: Path, digest: str, age: float) -> Path:
    path = root / "leases" / f"{hex_of(digest)}.lease"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": "gone", "pid": 999_999, "since": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_stale_lease_of_a_dead_process_is_taken_over(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    release, root = small["v1"], tmp_path / "volume"
    _lease_file(root, release.layer("env").digest, age=3600)

    result = boot_release(release, root, env, "--lease-timeout", "2", command=["hello"])

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello-from-v1"
    (report,) = reports(root)
    assert report["layers"] == {"env": "installed", "tiny": "installed"}
    assert report["phases"]["layer:env"] < 2
    assert lease_files(root) == []


def test_a_silent_lease_is_taken_over_once_it_is_older_than_the_timeout(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    release, root = small["v1"], tmp_path / "volume"
    lease = _lease_file(root, release.layer("env").digest, age=0)
    last_beat = lease.stat().st_mtime

    result = boot_release(release, root, env, "--lease-timeout", "3", command=["hello"])

    assert result.returncode == 0, result.stderr[-2000:]
    (report,) = reports(root)
    assert report["layers"]["env"] == "installed"
    marker = complete_layers(root)[hex_of(release.layer("env").digest)]
    assert marker["installed_at"] >= last_beat + 3  # taken only once the lease had gone stale
    assert report["phases"]["layer:env"] < 10


def test_a_live_lease_makes_a_boot_wait_for_the_holders_layer(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    release, root = small["v1"], tmp_path / "volume"
    env_layer = release.layer("env")
    # The holder: installs the layer elsewhere on the same filesystem, keeps the lease alive.
    elsewhere = tmp_path / "elsewhere"
    assert boot_release(release, elsewhere, env).returncode == 0
    lease = _lease_file(root, env_layer.digest, age=0)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.3):
            os.utime(lease)

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    try:
        waiter = start(
            boot_argv(
                root, release.name, release.store, ["--version", "v1", "--lease-timeout", "2"], ["hello"]
            ),
            env,
        )
        time.sleep(4)  # twice the lease timeout: only the heartbeat keeps the lease
        assert waiter.poll() is None, waiter.communicate()[1][-2000:]
        # Meanwhile it installed what it could: the model, not the env somebody else holds.
        assert listing(root / "layers") == [hex_of(release.layer("tiny").digest)]
        # The holder's layer appears, complete, by one rename (as an install publishes it).
        (root / "layers").mkdir(exist_ok=True)
        (elsewhere / "layers" / hex_of(env_layer.digest)).rename(root / "layers" / hex_of(env_layer.digest))
        out, err = waiter.communicate(timeout=60)
    finally:
        stop.set()
        beating.join()

    assert waiter.returncode == 0, err[-2000:]
    assert out.strip() == "hello-from-v1"
    report = report_of(root, waiter.pid)
    assert report["layers"]["env"] == "waited"
    assert report["bytes_fetched"] == release.layer("tiny").size  # the model, not the env


def test_a_boot_that_waited_for_a_concurrent_install_reports_waited(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    layer = big.layer("env")
    argv = boot_argv(root, big.name, big.store, ["--version", big.version])
    first = start(argv, env)
    wait_for(lambda: (root / "leases" / f"{hex_of(layer.digest)}.lease").exists(), 60, "the lease", first)
    second = start(argv, env)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]

    marker = complete_layers(root)[hex_of(layer.digest)]
    installer, waiter = report_of(root, first.pid), report_of(root, second.pid)
    assert installer["layers"]["env"] == "installed"
    assert waiter["started"] < marker["installed_at"]  # it began while the first one installed
    assert waiter["bytes_fetched"] == 0
    assert waiter["layers"]["env"] == "waited"


def test_a_short_lease_timeout_does_not_let_a_second_boot_take_a_live_lease(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    """The holder's heartbeat must beat faster than the timeout others judge it by."""
    root = tmp_path / "volume"
    layer = big.layer("env")
    argv = boot_argv(root, big.name, big.store, ["--version", big.version, "--lease-timeout", "1.5"])
    first = start(argv, env)
    wait_for(lambda: (root / "leases" / f"{hex_of(layer.digest)}.lease").exists(), 60, "the lease", first)
    second = start(argv, env)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]

    boots = [report_of(root, process.pid) for process in (first, second)]
    assert boots[1]["started"] < complete_layers(root)[hex_of(layer.digest)]["installed_at"]
    assert [boot["layers"]["env"] for boot in boots].count("installed") == 1, boots
    assert sum(boot["bytes_fetched"] for boot in boots) == layer.size  # downloaded once


# 6. The store unreachable


def test_a_warm_boot_needs_no_store(small: dict[str, Published], tmp_path: Path, env: dict[str, str]) -> None:
    release, root = small["v3"], tmp_path / "volume"
    assert boot_release(release, root, env).returncode == 0

    unreachable = boot_release(release, root, offline(env), command=["hello"])
    no_store = run(boot_argv(root, "small", "file:///nonexistent", ["--version", "v3"], ["hello"]), env)

    for result in (unreachable, no_store):
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "hello-from-v3"
    first, *warm = reports(root)
    assert not first["warm"] and len(warm) == 2
    assert all(boot["warm"] and boot["bytes_fetched"] == 0 for boot in warm)


def test_a_cold_boot_without_the_store_fails_naming_the_endpoint(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    release, root = small["v1"], tmp_path / "volume"
    environment = offline(env)
    endpoint = environment["AWS_ENDPOINT_URL"]

    pinned = boot_release(release, root, environment, command=["hello"])
    by_channel = boot_release(release, root, environment, pinned=False, command=["hello"])

    assert pinned.returncode != 0 and by_channel.returncode != 0
    assert "cold boot of small needs the store" in pinned.stderr
    for result in (pinned, by_channel):
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("podenv: error: ") and endpoint in message
        assert "Traceback" not in result.stderr and "hello-from" not in result.stdout
    assert listing(root / "layers") == [] and listing(root / "staging") == []


# 7. gc


def _status(root: Path) -> dict:
    result = run([*PODENV, "status", "--root", str(root)], clean_environment())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _gc(root: Path, keep: int) -> None:
    result = run([*PODENV, "gc", "--root", str(root), "--keep", str(keep)], clean_environment())
    assert result.returncode == 0, result.stderr


def test_gc_keeps_the_recent_releases_and_leased_layers_and_frees_the_rest(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    for version in ("v1", "v2", "v3"):
        assert boot_release(small[version], root, env).returncode == 0
    env_hex = {version: hex_of(release.layer("env").digest) for version, release in small.items()}
    model_hex = hex_of(small["v1"].layer("tiny").digest)
    assert set(complete_layers(root)) == {*env_hex.values(), model_hex}
    # A live lease on v1's env layer: somebody may be installing or using it.
    lease = _lease_file(root, small["v1"].layer("env").digest, age=0)

    _gc(root, keep=2)

    assert listing(root / "releases" / "small") == ["v2", "v3"]
    assert set(complete_layers(root)) == {*env_hex.values(), model_hex}

    lease.unlink()
    _gc(root, keep=2)

    assert listing(root / "releases" / "small") == ["v2", "v3"]
    assert set(complete_layers(root)) == {env_hex["v2"], env_hex["v3"], model_hex}
    assert [entry["version"] for entry in _status(root)["releases"]] == ["v3", "v2"]
    for version in ("v2", "v3"):
        result = boot_release(small[version], root, offline(env), command=["hello"])
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == f"hello-from-{version}"
        assert report_of_last(root)["warm"]


def test_gc_keeps_a_release_a_running_worker_uses_and_frees_it_once_the_worker_is_gone(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    worker = start(boot_argv(root, "small", small["v1"].store, ["--version", "v1"], ["sleep", "120"]), env)
    try:
        wait_for_worker(worker, "sleep")
        for version in ("v2", "v3"):
            assert boot_release(small[version], root, env).returncode == 0
        _gc(root, keep=1)
        assert listing(root / "releases" / "small") == ["v1", "v3"]
        assert [(r["version"], r["in_use"]) for r in _status(root)["releases"]] == [
            ("v3", False),
            ("v1", True),
        ]
    finally:
        worker.kill()
        worker.wait()
    # The worker's heartbeat child sees it gone and removes the in-use file.
    wait_for(lambda: not list((root / "in-use").glob("small/v1/*")), 30, "the in-use file to go")
    _gc(root, keep=1)
    assert listing(root / "releases" / "small") == ["v3"]
    assert hex_of(small["v1"].layer("env").digest) not in complete_layers(root)


def test_an_in_use_file_without_a_heartbeat_goes_stale(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    for version in ("v1", "v2"):
        assert boot_release(small[version], root, env).returncode == 0
    stale = root / "in-use" / "small" / "v1" / "lost-host.1"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    _gc(root, keep=1)
    assert listing(root / "releases" / "small") == ["v2"] and not stale.exists()


def report_of_last(root: Path) -> dict:
    return max(reports(root), key=lambda report: report["started"])


def test_gc_counts_a_release_as_recent_by_its_last_boot(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    for version in ("v1", "v2", "v3", "v1"):
        assert boot_release(small[version], root, env).returncode == 0

    _gc(root, keep=2)

    assert listing(root / "releases" / "small") == ["v1", "v3"]
    remaining = set(complete_layers(root))
    assert hex_of(small["v2"].layer("env").digest) not in remaining
    assert hex_of(small["v1"].layer("env").digest) in remaining


# 8. What the worker sees

WORKER_PROBE = """
import hashlib, json, os, sys, six, greeting
names = ("PATH", "CONDA_PREFIX", "HF_HUB_CACHE", "TORCH_HOME", "HF_HUB_OFFLINE", "PODENV_RELEASE")
release = open(os.environ["PODENV_RELEASE"], "rb").read()
print(json.dumps({
    "executable": sys.executable,
    "prefix": sys.prefix,
    "six": [six.__version__, six.__file__],
    "greeting": [greeting.hello("boot"), greeting.__file__],
    "environ": {name: os.environ.get(name) for name in names},
    "hub": sorted(os.listdir(os.environ["HF_HUB_CACHE"])),
    "release_digest": "sha256:" + hashlib.sha256(release).hexdigest(),
}))
"""


def test_the_worker_runs_the_envs_own_python_with_the_release_environment(
    real_release: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    environment = {
        **env,
        "PODENV_STORE": real_release["store"],
        "PODENV_ENV": real_release["name"],
        "PODENV_VERSION": real_release["version"],
        "PODENV_ROOT": str(root),
    }
    argv = [*PODENV, "boot", "--exec", "--", "python", "-c", WORKER_PROBE]

    result = run(argv, environment)

    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    layers = (root / "layers").resolve()
    release_dir = root / "releases" / real_release["name"] / real_release["version"]
    prefix = (release_dir / "env").resolve()
    assert prefix.parent == layers
    assert Path(seen["executable"]).is_relative_to(layers)
    assert Path(seen["prefix"]) == prefix
    assert seen["six"][0] == "1.17.0" and Path(seen["six"][1]).is_relative_to(prefix)
    assert seen["greeting"][0] == "hello boot from greeting 1.0"
    assert Path(seen["greeting"][1]).is_relative_to(prefix)
    environ = seen["environ"]
    assert environ["PATH"].split(os.pathsep)[0] == f"{prefix}/bin"
    assert environ["CONDA_PREFIX"] == str(prefix)
    assert environ["HF_HUB_CACHE"] == str(release_dir / "hf-hub")
    assert environ["TORCH_HOME"] == str(release_dir / "torch")
    assert environ["HF_HUB_OFFLINE"] == "1"
    assert environ["PODENV_RELEASE"] == str(release_dir / "release.json")
    assert seen["release_digest"] == real_release["digest"]
    assert "models--podenv--demo-model" in seen["hub"]
    config = release_dir / "hf-hub" / "models--podenv--demo-model" / "snapshots" / "r1" / "config.json"
    assert json.loads(config.read_text())["revision"] == "r1"
    (report,) = reports(root)
    assert not report["warm"] and set(report["layers"].values()) == {"installed"}
    assert complete_layers(root)


# 9. Credentials


def test_no_credential_reaches_logs_reports_errors_or_files(
    seaweed: SeaweedServer, tmp_path: Path, env: dict[str, str], s3env
) -> None:
    store = fresh_store(seaweed)
    good = publish_release(
        store, "creds", "1", [LayerSource("env", write_small_env(tmp_path / "a", "1"))], tmp_path
    )
    bad = publish_release(
        store, "creds", "2", [LayerSource("env", write_small_env(tmp_path / "b", "2"))], tmp_path
    )
    corrupt_blob(s3env, store, bad.layer("env").digest)
    root = tmp_path / "volume"
    wrong_secret = seaweed.secret_key[::-1]
    text, json_lines = ["-v"], ["--log-format", "json", "-v"]

    runs = {
        "cold": (good, text, env, True),
        "warm-json": (good, json_lines, env, True),
        "corrupt-json": (bad, json_lines, env, False),
        "corrupt-text": (bad, text, env, False),
        "offline": (bad, json_lines, offline(env), False),
        "wrong-secret": (bad, json_lines, {**env, "AWS_SECRET_ACCESS_KEY": wrong_secret}, False),
    }
    outputs = []
    for label, (release, log, environment, succeeds) in runs.items():
        argv = boot_argv(root, release.name, store, ["--version", release.version], ["hello"], log)
        result = run(argv, environment)
        assert (result.returncode == 0) == succeeds, (label, result.stderr[-2000:])
        outputs.append((label, result.stdout + result.stderr))
    json_errors = [line for label, output in outputs if "json" in label for line in output.splitlines()]
    assert any(line.startswith("{") for line in json_errors)  # the JSON format was in effect
    assert any("refused the credentials" in output for label, output in outputs if label == "wrong-secret")
    for command in ("status", "gc"):
        extra = ["--keep", "1"] if command == "gc" else []
        result = run([*PODENV, *json_lines, command, "--root", str(root), *extra], env)
        outputs.append((command, result.stdout + result.stderr))

    secrets = {seaweed.access_key, seaweed.secret_key, wrong_secret}
    for label, output in outputs:
        for secret in secrets:
            assert secret not in output, f"a credential in the output of the {label} boot"
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    assert any(path.parent.name == "boot-reports" for path in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a credential in {path}"


# 10. Rollback


def test_rolling_back_to_a_pinned_version_is_warm_and_needs_no_store(
    small: dict[str, Published], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    assert boot_release(small["v1"], root, env, command=["hello"]).stdout.strip() == "hello-from-v1"
    channel = boot_release(small["v2"], root, env, "--channel", "stable", pinned=False, command=["hello"])
    assert channel.stdout.strip() == "hello-from-v2", channel.stderr[-2000:]
    fetched_for_v2 = report_of_last(root)["bytes_fetched"]

    environment = {**offline(env), "PODENV_VERSION": "v1"}
    rollback = run(boot_argv(root, "small", small["v1"].store, command=["hello"]), environment)

    assert rollback.returncode == 0, rollback.stderr[-2000:]
    assert rollback.stdout.strip() == "hello-from-v1"
    report = report_of_last(root)
    assert report["warm"] and report["bytes_fetched"] == 0 and report["version"] == "v1"
    # Only v2's own env layer was fetched for v2: the model came from v1's install.
    assert fetched_for_v2 == small["v2"].layer("env").size

    # And the channel, offline, still boots what it last pointed at.
    by_channel = boot_release(small["v2"], root, offline(env), pinned=False, command=["hello"])
    assert by_channel.returncode == 0, by_channel.stderr[-2000:]
    assert by_channel.stdout.strip() == "hello-from-v2"
    assert report_of_last(root)["warm"] and "store unreachable" in " ".join(report_of_last(root)["warnings"])
