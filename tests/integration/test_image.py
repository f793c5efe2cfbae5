"""The worker image's command line, proven without Docker: a venv built the way worker/Dockerfile
builds the image (its hashed requirements with --no-deps, then podenv itself, then worker/ copied
under /opt/podenv's stand-in), running the image's entrypoint, worker/start.sh, against a release
in SeaweedFS, up to the handler's first answer."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.localworker import LocalWorker
from tests.integration.boot_support import REPOSITORY

pytestmark = pytest.mark.s3
DOCKERFILE = REPOSITORY / "worker" / "Dockerfile"


def _pip(venv: Path, *arguments: str) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_dockerfile_installs_what_this_test_installs() -> None:
    """If the Dockerfile changes its install steps, this test must change with it."""
    steps = re.findall(r"^RUN .*?(?<!\\)$", DOCKERFILE.read_text(), re.MULTILINE | re.DOTALL)
    installs = " ".join(step for step in steps if "pip install" in step)
    assert "--no-deps --require-hashes -r /tmp/requirements.txt" in installs
    assert "pip install --no-cache-dir --no-deps /src" in installs
    assert "COPY worker/ /opt/podenv/worker/" in DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["/opt/podenv/worker/start.sh"]' in DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's filesystem, as far as it matters: a python with podenv, and /opt/podenv."""
    root = tmp_path_factory.mktemp("image")
    venv = root / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "ensurepip", "--upgrade"], check=True, capture_output=True
    )
    _pip(venv, "--no-deps", "--require-hashes", "-r", str(REPOSITORY / "worker" / "requirements.txt"))
    _pip(venv, "--no-deps", str(REPOSITORY))
    workdir = root / "opt" / "podenv"
    shutil.copytree(REPOSITORY / "worker", workdir / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_image_python_has_podenv_and_nothing_heavy(image: Path) -> None:
    python = image / "python" / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    )
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert {"podenv", "boto3", "zstandard", "jsonschema"} <= names
    assert not names & {"torch", "runpod", "snakemake", "py-rattler", "conda-pack", "huggingface-hub"}


def test_the_entrypoint_boots_the_release_and_the_handler_answers(
    image: Path, worker_release: dict[str, str], tmp_path: Path
) -> None:
    environment = {key: value for key, value in worker_release.items() if key != "store"}
    environment.update(
        PATH=f"{image / 'python' / 'bin'}:/usr/bin:/bin",
        PODENV_STORE=worker_release["store"],
        PODENV_ENV="demo",
        PODENV_CHANNEL="stable",
        PODENV_ROOT=str(tmp_path / "runpod-volume" / "podenv"),
        PODENV_LOG_FORMAT="json",
    )
    workdir = image / "opt" / "podenv"
    entrypoint = [str(workdir / "worker" / "start.sh")]
    with LocalWorker(entrypoint, environment, tmp_path / "worker.log", cwd=workdir) as worker:
        answer = worker.runsync({"name": "image"})
        events = worker.log_events()
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["text"] == "hello image from greeting 1.0"
    boot = next(event for event in events if "bytes_fetched" in event)
    assert boot["warm"] is False and boot["bytes_fetched"] > 0
    assert str(image / "python") not in next(e for e in events if e.get("event") == "worker_ready")["python"]
