"""Boot, gc, doctor and leases on real network filesystems, not only on the local disk.

Two kinds: SeaweedFS's own FUSE client (`weed mount` of the test server's filer; two mounts
of one path are two workers on one volume) and the simulated network volume
(devkit/netvolume.py: a FUSE passthrough with a round trip per metadata request).
"""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.netvolume import NetworkVolume, fuse_available
from devkit.seaweed import FilerMount, SeaweedServer
from podenv.doctor import probe_semantics
from podenv.volume import Lease
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    boot_argv,
    clean_environment,
    complete_layers,
    lease_files,
    listing,
    publish_release,
    report_of,
    reports,
    run,
    start,
    wait_for,
    write_small_env,
    write_tiny_model,
)

_NO_FUSE = fuse_available()
pytestmark = pytest.mark.skipif(_NO_FUSE is not None, reason=_NO_FUSE or "")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> dict[str, Published]:
    """Releases v1 and v2 of `netsmall` (own env each, a shared model)."""
    work = tmp_path_factory.mktemp("netsmall")
    store = f"s3://{seaweed.bucket}/net-{uuid.uuid4().hex[:12]}"
    model = write_tiny_model(work / "model")
    releases = {}
    for version in ("v1", "v2"):
        tree = write_small_env(work / f"env-{version}", version, files=200)
        layers = [LayerSource("env", tree), LayerSource("tiny", model, "model", "hf-hub")]
        releases[version] = publish_release(store, "netsmall", version, layers, work)
    return releases


@pytest.fixture
def two_mounts(seaweed: SeaweedServer, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """One filer directory mounted twice: two workers' view of one network volume."""
    filer_path = f"/volume-{uuid.uuid4().hex[:12]}"
    first = FilerMount(seaweed, tmp_path / "worker-a", filer_path).start()
    second: FilerMount | None = None
    try:
        second = FilerMount(seaweed, tmp_path / "worker-b", filer_path).start()
        yield first.mountpoint, second.mountpoint
    finally:
        if second is not None:
            second.stop()
        first.stop()


@pytest.fixture
def simulated(tmp_path: Path) -> Iterator[Path]:
    """The simulated volume, with a short round trip (speed is the bench's business)."""
    with NetworkVolume(tmp_path / "backing", tmp_path / "volume", latency=0.0002, bandwidth=0) as volume:
        yield volume.mountpoint


def _boot(release: Published, root: Path, env: dict[str, str], *command: str):
    argv = boot_argv(root / "podenv", release.name, release.store, ["--version", release.version])
    return run([*argv, *(["--exec", "--", *command] if command else [])], env)


def test_boots_on_two_mounts_of_one_volume_download_each_layer_once(
    small: dict[str, Published], two_mounts: tuple[Path, Path], s3env
) -> None:
    env = clean_environment(s3env)
    release = small["v1"]
    argv = {root: boot_argv(root / "podenv", release.name, release.store, ["--version", "v1"], ["hello"])
            for root in two_mounts}  # fmt: skip
    processes = [start(argv[root], env) for root in two_mounts for _ in range(3)]
    outputs = [process.communicate(timeout=300) for process in processes]

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        assert out.strip() == "hello-from-v1"
    root = two_mounts[0] / "podenv"
    # The other mount's reports reach this one within its name cache's lifetime.
    pids = {process.pid for process in processes}
    wait_for(lambda: pids <= {report["pid"] for report in reports(root)}, 15, "every boot's report")
    boots = [report_of(root, process.pid) for process in processes]
    for layer in release.manifest.layers:
        states = [boot["layers"][layer.name] for boot in boots]
        assert states.count("installed") == 1, (layer.name, states)
        # A worker on the other mount can miss the winner's rename for about a second (its
        # kernel's name cache) and download the layer again, to lose the rename: duplicate
        # work, never a broken layer. Leases save work; correctness rests on rename.
        assert set(states) <= {"installed", "waited", "present", "lost-race"}, states
    assert set(complete_layers(root)) == {
        layer.digest.removeprefix("sha256:") for layer in release.manifest.layers
    }
    assert listing(root / "staging") == []
    assert lease_files(root) == []


def test_a_lease_taken_through_one_mount_holds_against_the_other(two_mounts: tuple[Path, Path]) -> None:
    for root in two_mounts:
        (root / "leases").mkdir(exist_ok=True)
    first = Lease(two_mounts[0] / "leases" / "layer.lease", timeout=60, heartbeat=0.5)
    second = Lease(two_mounts[1] / "leases" / "layer.lease", timeout=60, heartbeat=0.5)
    assert first.try_take()
    try:
        time.sleep(1.5)  # heartbeats cross over; the other mount must still see a live lease
        assert not second.try_take()
        assert second.age() is not None and second.age() < 60
    finally:
        first.release()
    assert second.try_take()
    second.release()


def test_gc_on_a_mount_frees_what_the_other_mount_booted(
    small: dict[str, Published], two_mounts: tuple[Path, Path], s3env
) -> None:
    env = clean_environment(s3env)
    first, second = two_mounts
    assert _boot(small["v1"], first, env).returncode == 0
    time.sleep(1.1)  # v2 boots later, so it is the more recent release
    assert _boot(small["v2"], second, env).returncode == 0
    time.sleep(1.5)

    result = run([*PODENV, "gc", "--root", str(first / "podenv"), "--keep", "1"], clean_environment())

    assert result.returncode == 0, result.stderr
    time.sleep(1.5)
    assert listing(second / "podenv" / "releases" / "netsmall") == ["v2"]
    kept = {layer.digest.removeprefix("sha256:") for layer in small["v2"].manifest.layers}
    assert set(complete_layers(second / "podenv")) == kept
    warm = _boot(small["v2"], first, clean_environment(), "hello")
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert warm.stdout.strip() == "hello-from-v2"


def test_doctor_probes_pass_on_a_weed_mount_and_on_the_simulated_volume(
    two_mounts: tuple[Path, Path], simulated: Path
) -> None:
    for directory in (two_mounts[0], simulated):
        probes = probe_semantics(directory)
        assert [(probe.name, probe.ok) for probe in probes if not probe.ok] == [], (directory, probes)
        assert [path.name for path in directory.iterdir() if path.name.startswith(".podenv-doctor")] == []


def test_doctor_recommends_local_placement_for_a_slow_volume_and_says_why(
    simulated: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local-disk"
    argv = [*PODENV, "doctor", "--root", str(simulated / "podenv"), "--local-root", str(local)]

    result = run(argv, clean_environment())

    line = next(line for line in result.stderr.splitlines() if "placement:" in line)
    assert line.startswith("PASS placement: volume "), line
    assert "; local disk " in line and "stat " in line and "MB/s read" in line
    assert "recommends placement=local: small files are " in line
    assert "slower on the volume" in line
    assert [path.name for path in local.iterdir()] == []


def test_boot_exec_and_gc_on_the_simulated_volume(
    small: dict[str, Published], simulated: Path, s3env
) -> None:
    env = clean_environment(s3env)
    cold = _boot(small["v1"], simulated, env, "hello")
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert cold.stdout.strip() == "hello-from-v1"
    root = simulated / "podenv"
    complete_layers(root)
    assert _boot(small["v2"], simulated, env).returncode == 0
    result = run([*PODENV, "gc", "--root", str(root), "--keep", "1"], clean_environment())
    assert result.returncode == 0, result.stderr
    assert listing(root / "releases" / "netsmall") == ["v2"]
    status = json.loads(run([*PODENV, "status", "--root", str(root)], clean_environment()).stdout)
    assert [entry["version"] for entry in status["releases"]] == ["v2"]
