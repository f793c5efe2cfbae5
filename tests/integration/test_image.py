"""The worker image's command line, proven without Docker: a venv built the way worker/Dockerfile
builds the image (its hashed requirements with --no-deps, then podenv itself, then start.sh copied
to /opt/podenv's stand-in: the image is only the bootstrap, with no handler of its own), running
the image's entrypoint against a release in SeaweedFS, up to the answer of the handler that came
with the release (its code layer)."""

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devkit.localworker import LocalWorker
from devkit.seaweed import SeaweedServer
from tests.integration.boot_support import (
    REPOSITORY,
    LayerSource,
    clean_environment,
    publish_release,
    write_small_env,
)

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
    assert "COPY worker/start.sh /opt/podenv/start.sh" in DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["/opt/podenv/start.sh"]' in DOCKERFILE.read_text()


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
    workdir.mkdir(parents=True)
    shutil.copy2(REPOSITORY / "worker" / "start.sh", workdir / "start.sh")
    return root


def test_the_image_python_has_podenv_and_nothing_heavy(image: Path) -> None:
    python = image / "python" / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    )
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert {"podenv", "boto3", "zstandard", "jsonschema"} <= names
    assert not names & {"torch", "runpod", "snakemake", "py-rattler", "conda-pack", "huggingface-hub"}


def _image_environment(image: Path, base: dict[str, str], store: str, root: Path) -> dict[str, str]:
    environment = {key: value for key, value in base.items() if key != "store"}
    environment.update(
        PATH=f"{image / 'python' / 'bin'}:/usr/bin:/bin",
        PODENV_STORE=store,
        PODENV_ENV="demo",
        PODENV_CHANNEL="stable",
        PODENV_ROOT=str(root),
        PODENV_LOG_FORMAT="json",
    )
    return environment


def test_the_entrypoint_boots_the_release_and_the_handler_answers(
    image: Path, worker_release: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "runpod-volume" / "podenv"
    environment = _image_environment(image, worker_release, worker_release["store"], root)
    workdir = image / "opt" / "podenv"
    assert not (workdir / "worker").exists()  # the handler can only come from the release
    entrypoint = [str(workdir / "start.sh")]
    with LocalWorker(entrypoint, environment, tmp_path / "worker.log", cwd=workdir) as worker:
        answer = worker.runsync({"name": "image"})
        events = worker.log_events()
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["text"] == "hello image from greeting 1.0"
    boot = next(event for event in events if "bytes_fetched" in event)
    assert boot["warm"] is False and boot["bytes_fetched"] > 0
    assert str(image / "python") not in next(e for e in events if e.get("event") == "worker_ready")["python"]
    assert boot["layers"]["code"] == "installed"


def test_the_entrypoint_refuses_a_release_without_code_in_one_line(
    image: Path, seaweed: SeaweedServer, s3env: dict[str, str], tmp_path: Path
) -> None:
    """A release published before releases carried their handler: this image has none to run."""
    store = f"s3://{seaweed.bucket}/codeless-{uuid.uuid4().hex[:8]}"
    env_tree = write_small_env(tmp_path / "env", "1.0")
    publish_release(store, "demo", "0.9.0", [LayerSource("env", env_tree)], tmp_path / "build", "stable")
    root = tmp_path / "volume" / "podenv"
    environment = _image_environment(image, clean_environment(s3env), store, root)
    done = subprocess.run(
        [str(image / "opt" / "podenv" / "start.sh")],
        cwd=image / "opt" / "podenv",
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 11, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "no code layer" in line]
    assert len(errors) == 1 and "publish it again with the pipeline" in errors[0]
