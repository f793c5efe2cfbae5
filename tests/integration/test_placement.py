"""placement=local: the env on each worker's own disk from the volume's verified blob cache,
the models on the volume; against the real S3 server, with real `podenv boot` processes."""

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from tests.integration.boot_support import (
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
    write_small_env,
    write_tiny_model,
)
from tests.integration.test_handler import booted_worker

PRINT_ENV = ["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    work = tmp_path_factory.mktemp("placement")
    store = f"s3://{seaweed.bucket}/placement-{uuid.uuid4().hex[:12]}"
    layers = [
        LayerSource("env", write_small_env(work / "env", "v1", files=300)),
        LayerSource("tiny", write_tiny_model(work / "model"), "model", "hf-hub"),
    ]
    return publish_release(store, "placed", "v1", layers, work)


def local_boot(release: Published, volume: Path, local: Path, command: list[str] | None = None) -> list[str]:
    options = ["--version", release.version, "--placement", "local", "--local-root", str(local)]
    return boot_argv(volume, release.name, release.store, options, command)


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")


def test_local_placement_runs_the_env_from_local_disk_and_the_models_from_the_volume(
    release: Published, tmp_path: Path, s3env
) -> None:
    volume, local = tmp_path / "volume", tmp_path / "local"
    env_layer, model = release.layer("env"), release.layer("tiny")

    result = run(local_boot(release, volume, local, ["hello"]), clean_environment(s3env))

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello-from-v1"
    assert f"env on the local disk ({local / 'layers' / hex_of(env_layer.digest)})" in result.stderr
    assert set(complete_layers(local)) == {hex_of(env_layer.digest)}
    assert set(complete_layers(volume)) == {hex_of(model.digest)}
    blob = volume / "blobs" / hex_of(env_layer.digest)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hex_of(env_layer.digest)
    report = reports(volume)[-1]
    assert report["layers"] == {"env": "local-from-store", "tiny": "installed"}
    assert report["bytes_fetched"] == env_layer.size + model.size
    # The volume keeps a record of the release (for gc); the worker's view is on its disk.
    assert listing(volume / "releases" / "placed") == ["v1"]
    view = local / "releases" / "placed" / "v1"
    assert (view / "env").resolve() == local / "layers" / hex_of(env_layer.digest)
    assert (view / "hf-hub" / "models--podenv--tiny").resolve().is_relative_to(volume / "layers")
    # A restart on the same disk is warm and needs no store.
    offline = clean_environment()
    again = run(local_boot(release, volume, local, ["hello"]), offline)
    assert again.returncode == 0, again.stderr[-2000:]
    assert reports(volume)[-1]["warm"]


def test_a_corrupted_blob_in_the_volume_cache_is_caught_removed_and_fetched_again(
    release: Published, tmp_path: Path, s3env
) -> None:
    volume = tmp_path / "volume"
    env_layer = release.layer("env")
    first = run(local_boot(release, volume, tmp_path / "local-1"), clean_environment(s3env))
    assert first.returncode == 0, first.stderr[-2000:]
    blob = volume / "blobs" / hex_of(env_layer.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only reading every byte can tell
    blob.write_bytes(bytes(data))

    second = start(local_boot(release, volume, tmp_path / "local-2", ["hello"]), clean_environment(s3env))
    out, err = second.communicate(timeout=300)

    assert second.returncode == 0, err[-2000:]
    assert out.strip() == "hello-from-v1"
    report = report_of(volume, second.pid)
    assert report["layers"]["env"] == "local-from-store"
    assert report["bytes_fetched"] == env_layer.size
    assert any("failed verification" in warning for warning in report["warnings"]), report["warnings"]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hex_of(env_layer.digest)
    assert [name for name in listing(volume / "blobs") if name != hex_of(env_layer.digest)] == []


def test_two_workers_with_separate_local_roots_download_each_blob_once(
    release: Published, tmp_path: Path, s3env
) -> None:
    volume = tmp_path / "volume"
    workers = [
        start(local_boot(release, volume, tmp_path / f"local-{index}", ["hello"]), clean_environment(s3env))
        for index in range(4)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]

    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
        assert out.strip() == "hello-from-v1"
    boots = [report_of(volume, worker.pid) for worker in workers]
    assert (
        sum(boot["bytes_fetched"] for boot in boots) == release.layer("env").size + release.layer("tiny").size
    )
    assert sorted(boot["layers"]["env"] for boot in boots) == ["local-from-blob-cache"] * 3 + [
        "local-from-store"
    ]
    for index in range(4):
        assert set(complete_layers(tmp_path / f"local-{index}")) == {hex_of(release.layer("env").digest)}
    assert lease_files(volume) == []
    assert [name for name in listing(volume / "blobs") if name.startswith(".")] == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a container disk too small for the env and boot's margin."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_local_disk_too_small_is_refused_before_any_byte(
    release: Published, tmp_path: Path, small_disk: Path, s3env
) -> None:
    volume = tmp_path / "volume"

    result = run(local_boot(release, volume, small_disk / "podenv", ["hello"]), clean_environment(s3env))

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "not enough space" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"the local disk at {small_disk / 'podenv'}" in errors[0] and "containerDiskInGb" in errors[0]
    report = reports(volume)[-1]
    assert report["bytes_fetched"] == 0 and report["bytes_written"] == 0
    assert listing(volume / "blobs") == [] and listing(volume / "layers") == []
    assert listing(small_disk / "podenv" / "layers") == []


def test_the_worker_sees_the_same_variables_with_either_placement(
    release: Published, tmp_path: Path, s3env
) -> None:
    seen = {}
    for placement in ("volume", "local"):
        volume, local = tmp_path / f"volume-{placement}", tmp_path / f"local-{placement}"
        options = ["--version", "v1", "--placement", placement, "--local-root", str(local)]
        argv = boot_argv(volume, release.name, release.store, options, PRINT_ENV)
        result = run(argv, clean_environment(s3env))
        assert result.returncode == 0, result.stderr[-2000:]
        seen[placement] = json.loads(result.stdout)
    assert set(seen["volume"]) == set(seen["local"])
    differing = {name for name in seen["volume"] if seen["volume"][name] != seen["local"][name]}
    # Only the paths differ (each run has its own volume), and they lead to the same content.
    assert differing <= {"PATH", "CONDA_PREFIX", "HF_HUB_CACHE", "TORCH_HOME", "PODENV_RELEASE"}, differing
    for name in ("HF_HUB_CACHE",):
        assert sorted(os.listdir(seen["volume"][name])) == sorted(os.listdir(seen["local"][name]))
    assert Path(seen["local"]["CONDA_PREFIX"]).is_relative_to(tmp_path / "local-local")
    assert Path(seen["volume"]["CONDA_PREFIX"]).is_relative_to(tmp_path / "volume-volume")


def test_the_handler_answers_with_the_env_on_local_disk(
    worker_release: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "local"
    extra = {"PODENV_PLACEMENT": "local", "PODENV_LOCAL_ROOT": str(local)}
    with booted_worker(worker_release, tmp_path / "volume" / "podenv", extra) as worker:
        answer = worker.runsync({"name": "Ada"})
        ready = next(event for event in worker.log_events() if event.get("event") == "worker_ready")
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["text"] == "hello Ada from greeting 1.0"
    assert answer["output"]["model"] == "podenv/demo-model@r1"
    assert ready["python"].startswith(str(local)), ready["python"]


def test_without_a_network_volume_the_env_streams_from_the_store_to_the_local_disk(
    release: Published, tmp_path: Path, s3env
) -> None:
    # As RunPod runs an endpoint with no volume: RUNPOD_ENDPOINT_ID set, PODENV_ALLOW_NO_VOLUME=1,
    # the root on the container disk (/). The default placement there is local; no --placement.
    root, local = tmp_path / "runpod-volume" / "podenv", tmp_path / "local"
    env_layer, model = release.layer("env"), release.layer("tiny")
    options = ["--version", release.version, "--local-root", str(local)]
    argv = boot_argv(root, release.name, release.store, options, ["hello"])
    environment = clean_environment({**s3env, "RUNPOD_ENDPOINT_ID": "ep", "PODENV_ALLOW_NO_VOLUME": "1"})
    environment.pop("RUNPOD_POD_ID", None)

    result = run(argv, environment)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello-from-v1"
    assert set(complete_layers(local)) == {hex_of(env_layer.digest)}
    report = reports(root)[-1]
    assert report["placement"] == "local"
    assert report["layers"]["env"] in ("local-from-store", "installed"), report["layers"]
    assert report["bytes_fetched"] >= env_layer.size + model.size
    assert listing(root / "blobs") == [], "no blob cache on the volume root: it is the same container disk"
