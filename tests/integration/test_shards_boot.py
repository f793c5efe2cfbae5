"""`podenv boot` of package-sharded releases from the real S3 server: concurrency, deltas, memory,
and a release written in the old format (schema 1, one tar.zst per layer) that must still boot."""

import json
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.blobcache import BlobCache
from podenv.blobpool import PROCESS_MEMORY_BOUND
from podenv.catalog import diff_releases, load_index, load_release
from podenv.store import open_store
from tests.integration.boot_support import (
    LayerSource,
    Published,
    boot_argv,
    complete_layers,
    delete_blob,
    lease_files,
    listing,
    publish_release,
    publish_sharded_release,
    report_of,
    run,
    start,
    wait_for,
    write_big_env,
    write_small_env,
)


def fresh_store(seaweed: SeaweedServer) -> str:
    return f"s3://{seaweed.bucket}/shards-{uuid.uuid4().hex[:12]}"


def package_of(path: str) -> str:
    """The synthetic envs' packages: one per directory below files/ (and the big file alone)."""
    parts = path.split("/")
    return f"conda-{parts[1]}" if parts[0] == "files" and len(parts) > 2 else "conda-big"


def one_package_apart(
    store: str, work: Path, name: str, versions: tuple[str, str], sizes: tuple[int, int]
) -> tuple[Published, Published]:
    """Two releases of one env of 10 packages (``sizes``: files a package, the big file's bytes)
    that differ in one file of package conda-d03."""
    trees = [work / f"tree-{version}" for version in versions]
    write_big_env(trees[0], 10, *sizes)
    shutil.copytree(trees[0], trees[1])
    (trees[1] / "files" / "d03" / "f0007.txt").write_text(f"changed in {versions[1]}\n")
    first, second = (
        publish_sharded_release(store, name, version, tree, package_of, work / f"published-{version}")
        for version, tree in zip(versions, trees, strict=True)
    )
    return first, second


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    """20 packages of 500 small files, and a 96 MB random file that is a shard of its own."""
    work = tmp_path_factory.mktemp("sharded-big")
    write_big_env(work / "tree", 20, 500, 96 << 20)
    return publish_sharded_release(fresh_store(seaweed), "big", "1", work / "tree", package_of, work)


def test_sixteen_simultaneous_boots_download_each_shard_once(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    layer = big.layer("env")
    index = load_index(open_store(big.store), layer)
    argv = boot_argv(root, big.name, big.store, ["--version", "1", "--jobs", "2"], ["true"])

    processes = [start(argv, env) for _ in range(16)]
    outputs = [process.communicate(timeout=600) for process in processes]

    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    boots = [report_of(root, process.pid) for process in processes]
    states = [boot["layers"]["env"] for boot in boots]
    assert states.count("installed") == 1 and set(states) <= {"installed", "waited", "present"}, states
    # Each shard and the index fetched once in all: the sum of the fetches is the layer's size.
    assert sum(boot["bytes_fetched"] for boot in boots) == layer.size
    cache = BlobCache(root / "blobs")
    assert all(cache.has(shard.digest, shard.size) for shard in index.shards)
    assert complete_layers(root)[layer.digest.removeprefix("sha256:")]["files"] == layer.files
    assert listing(root / "staging") == [] and lease_files(root) == []
    assert [name for name in listing(root / "blobs") if name.startswith(".")] == []  # no partial blob


def test_workers_with_their_own_local_disks_download_each_shard_once(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    """placement=local: each worker holds the layer's lease on its own disk, so only the blob
    leases on the shared volume keep four cold workers from fetching every shard four times."""
    root, layer = tmp_path / "volume", big.layer("env")

    def worker(number: int) -> list[str]:
        local = ["--placement", "local", "--local-root", str(tmp_path / f"worker-{number}")]
        return boot_argv(root, big.name, big.store, ["--version", "1", "--jobs", "2", *local], ["true"])

    processes = [start(worker(number), env) for number in range(4)]
    outputs = [process.communicate(timeout=600) for process in processes]

    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    boots = [report_of(root, process.pid) for process in processes]
    assert sum(boot["bytes_fetched"] for boot in boots) == layer.size, [b["bytes_fetched"] for b in boots]
    for number in range(4):
        installed = complete_layers(tmp_path / f"worker-{number}")
        assert installed[layer.digest.removeprefix("sha256:")]["files"] == layer.files
    assert lease_files(root) == [] and listing(root / "layers") == []
    assert [name for name in listing(root / "blobs") if name.startswith(".")] == []  # no partial blob


def test_two_releases_booted_at_once_fetch_the_shards_they_share_once(
    tmp_path: Path, seaweed: SeaweedServer, env: dict[str, str], s3env
) -> None:
    """Two envs that share all packages but one (as the tts and asr envs share torch), booted
    at the same moment on one volume: different layers, so different layer leases; each
    shared shard is still fetched once, under its blob lease."""
    store = fresh_store(seaweed)
    first, second = one_package_apart(store, tmp_path / "work", "pair", ("a", "b"), (100, 16 << 20))
    shards_a = load_index(open_store(store), first.layer("env")).shards
    shards_b = load_index(open_store(store), second.layer("env")).shards
    root = tmp_path / "volume"

    processes = [
        start(boot_argv(root, "pair", store, ["--version", version, "--jobs", "2"]), env)
        for version in ("a", "b", "a", "b")
    ]
    outputs = [process.communicate(timeout=600) for process in processes]

    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    fetched = sum(report_of(root, process.pid)["bytes_fetched"] for process in processes)
    distinct = {shard.digest: shard.size for shard in [*shards_a, *shards_b]}
    indexes = sum(
        len(load_index(open_store(store), p.layer("env")).canonical_bytes()) for p in (first, second)
    )
    assert len(distinct) == len(shards_a) + 1
    assert fetched == sum(distinct.values()) + indexes
    assert lease_files(root) == []


def test_a_release_whose_index_is_missing_from_the_store_fails_in_one_line(
    tmp_path: Path, seaweed: SeaweedServer, env: dict[str, str], s3env
) -> None:
    work = tmp_path / "work"
    write_big_env(work / "tree", 2, 10, 1 << 20)
    release = publish_sharded_release(fresh_store(seaweed), "noindex", "1", work / "tree", package_of, work)
    layer = release.layer("env")
    delete_blob(s3env, release.store, layer.digest)
    root = tmp_path / "volume"

    result = run(boot_argv(root, "noindex", release.store, ["--version", "1"]), env)

    assert result.returncode == 4, result.stderr[-2000:]  # not found
    lines = [line for line in result.stderr.splitlines() if line.startswith("podenv: error: ")]
    assert len(lines) == 1 and f"the index of layer env ({layer.digest}) is not in" in lines[0], lines
    assert listing(root / "layers") == [] and listing(root / "staging") == []
    assert lease_files(root) == [] and listing(root / "blobs") == []


def pool_processes(pid: int) -> list[int]:
    """The children of process ``pid`` (the boot's installing processes), from /proc."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return children if len(children) >= 2 else []


def test_a_killed_installing_process_fails_the_boot_at_once_and_leaves_nothing(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "volume"
    boot = start(boot_argv(root, big.name, big.store, ["--version", "1", "--jobs", "2"]), env)
    victim = wait_for(lambda: pool_processes(boot.pid), 120, "the installing processes", boot)[0]

    os.kill(victim, signal.SIGKILL)
    _, err = boot.communicate(timeout=120)

    assert boot.returncode != 0
    assert "a process installing the layers died" in err, err[-2000:]
    assert listing(root / "layers") == [] and listing(root / "staging") == []
    assert lease_files(root) == []


def test_peak_memory_of_an_install_stays_within_the_stated_bound(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    """A 96 MB file and 10,000 small ones through two processes: each stays under the bound."""
    root = tmp_path / "volume"

    result = run(boot_argv(root, big.name, big.store, ["--version", "1", "--jobs", "2"]), env)

    assert result.returncode == 0, result.stderr[-2000:]
    [report] = [report for report in (root / "boot-reports").glob("*.json")]
    document = json.loads(report.read_text())
    assert 0 < document["peak_worker_rss"] <= PROCESS_MEMORY_BOUND, document["peak_worker_rss"]


def test_an_upgrade_fetches_only_the_changed_packages_shard_and_diff_says_so(
    tmp_path: Path, seaweed: SeaweedServer, env: dict[str, str], s3env
) -> None:
    store = fresh_store(seaweed)
    first, second = one_package_apart(store, tmp_path / "work", "up", ("1", "2"), (50, 4 << 20))
    root = tmp_path / "volume"
    assert run(boot_argv(root, "up", store, ["--version", "1"]), env).returncode == 0

    result = run(boot_argv(root, "up", store, ["--version", "2"]), env)

    assert result.returncode == 0, result.stderr[-2000:]
    reports = sorted((root / "boot-reports").glob("*.json"), key=os.path.getmtime)
    upgrade = json.loads(reports[-1].read_text())
    old_index = load_index(open_store(store), first.layer("env"))
    new_index = load_index(open_store(store), second.layer("env"))
    changed = [shard for shard in new_index.shards if shard not in old_index.shards]
    assert [shard.name for shard in changed] == ["conda-d03"]
    index_size = len(new_index.canonical_bytes())
    assert upgrade["bytes_fetched"] == changed[0].size + index_size
    assert upgrade["bytes_fetched"] < second.layer("env").size / 20
    difference = diff_releases(
        load_release(open_store(store), "up", "1"),
        load_release(open_store(store), "up", "2"),
        open_store(store),
    )
    assert difference["fetch_bytes"] == upgrade["bytes_fetched"] and difference["fetch_blobs"] == 2


def test_a_release_written_in_the_old_format_still_boots(
    tmp_path: Path, seaweed: SeaweedServer, env: dict[str, str], s3env
) -> None:
    """Schema 1, one tar.zst per layer: what every release published before shards looks like."""
    work = tmp_path / "work"
    tree = write_small_env(work / "env", "old")
    published = publish_release(
        fresh_store(seaweed), "old", "1", [LayerSource("env", tree)], work, schema_version=1
    )
    assert published.manifest.document["schema_version"] == 1
    assert not published.layer("env").sharded
    root = tmp_path / "volume"

    result = run(boot_argv(root, "old", published.store, ["--version", "1"], ["hello"]), env)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello-from-old"
    assert complete_layers(root)[published.layer("env").digest.removeprefix("sha256:")]["files"] == 42


def test_placement_local_puts_the_sharded_env_on_the_worker_disk_and_its_shards_in_the_volume_cache(
    big: Published, tmp_path: Path, env: dict[str, str]
) -> None:
    root, layer = tmp_path / "volume", big.layer("env")
    index = load_index(open_store(big.store), layer)

    def boot(local: Path) -> dict:
        options = ["--version", "1", "--placement", "local", "--local-root", str(local), "--jobs", "2"]
        result = run(boot_argv(root, big.name, big.store, options), env)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(
            sorted((root / "boot-reports").glob("*.json"), key=os.path.getmtime)[-1].read_text()
        )

    first = boot(tmp_path / "worker-a")
    second = boot(tmp_path / "worker-b")  # another worker start: everything from the volume's cache

    hex_digest = layer.digest.removeprefix("sha256:")
    for worker in ("worker-a", "worker-b"):
        assert complete_layers(tmp_path / worker)[hex_digest]["files"] == layer.files
    assert listing(root / "layers") == []  # the env is not on the volume
    cache = BlobCache(root / "blobs")
    assert all(cache.has(shard.digest, shard.size) for shard in index.shards) and cache.has(layer.digest)
    assert first["bytes_fetched"] == layer.size and second["bytes_fetched"] == 0
    assert second["layers"]["env"] == "blob-cache"
