"""Fixtures shared by all test layers: a real S3 server and a store over each backend."""

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.runpod.mount import RUNPOD_MARKERS
from podenv.store import Store, TransferConfig, open_store
from tests.reference import NOT_RUN_REASON, contracts_required, reference_present

# The tests boot onto volume directories on the local disk, also when they run on a RunPod
# machine; the rule that RunPod needs a network volume has its own tests (test_runpod_volume).
for _name in RUNPOD_MARKERS:
    os.environ.pop(_name, None)


def _has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _contract_tests_need_the_reference(items)
    _gpu_tests_need_a_gpu(items)


def _contract_tests_need_the_reference(items: list[pytest.Item]) -> None:
    """Contract tests run where ../shared/reference is; elsewhere they are reported as not run
    (with the reason), except under CI, which runs them all (and fails, naming the missing file)."""
    if reference_present() or contracts_required():
        return
    not_run = pytest.mark.skip(reason=NOT_RUN_REASON)
    for item in items:
        if "contract" in item.keywords:
            item.add_marker(not_run)


def _gpu_tests_need_a_gpu(items: list[pytest.Item]) -> None:
    """GPU tests run where there is a GPU (the device machine: `pytest -m gpu`), nowhere else."""
    if _has_nvidia_gpu():
        return
    needs_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU; run `pytest -m gpu` on the device machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(needs_gpu)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS for the whole session, on loopback, with its own credentials."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_environment(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.environment.items():
        monkeypatch.setenv(name, value)
    return seaweed.environment


def _store_url(kind: str, tmp_path: Path, seaweed_bucket: str) -> str:
    if kind == "file":
        root = tmp_path / "store"
        root.mkdir()
        return f"file://{root}"
    # A fresh prefix per test keeps tests apart in the one shared bucket.
    return f"s3://{seaweed_bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        request.getfixturevalue("s3_environment")
        return _store_url("s3", tmp_path, request.getfixturevalue("seaweed").bucket)
    return _store_url("file", tmp_path, "")


@pytest.fixture
def small_transfer() -> TransferConfig:
    """Small parts and ranges, so that modest test blobs take the multipart and ranged paths."""
    return TransferConfig(multipart_threshold=8 << 20, part_size=5 << 20, range_size=1 << 20, concurrency=4)


@pytest.fixture
def store(store_url: str, small_transfer: TransferConfig) -> Store:
    return open_store(store_url, transfer=small_transfer)


@pytest.fixture
def random_file(tmp_path: Path):
    def make(size: int, name: str | None = None) -> Path:
        path = tmp_path / (name or f"blob-{size}-{uuid.uuid4().hex[:6]}")
        with open(path, "wb") as sink:
            remaining = size
            while remaining:
                piece = min(remaining, 16 << 20)
                sink.write(os.urandom(piece))
                remaining -= piece
        return path

    return make
