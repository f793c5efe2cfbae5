"""Fixtures the handler, image and doctor tests share."""

import uuid

import pytest

from devkit.demoproject import build_channel_dir, create_project, worker_wheels
from devkit.seaweed import SeaweedServer
from tests.integration.boot_support import REPOSITORY, clean_environment
from tests.integration.pipeline_support import snakemake


@pytest.fixture(scope="session")
def worker_release(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> dict[str, str]:
    """The demo project with the runpod SDK in its env, published to `stable` by Snakemake."""
    store = f"s3://{seaweed.bucket}/handler-{uuid.uuid4().hex[:12]}"
    channel_dir = tmp_path_factory.mktemp("channel")
    build_channel_dir(channel_dir)
    project = tmp_path_factory.mktemp("project")
    create_project(project, REPOSITORY, store, channel_dir, wheels=worker_wheels())
    environment = {**clean_environment(seaweed.environment)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in seaweed.environment.items():
            patch.setenv(name, value)
        result = snakemake(project, "publish", "--config", "channel=stable")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"store": store, **environment}


@pytest.fixture(scope="module")
def s3env(seaweed: SeaweedServer):
    """The S3 variables, in this process (for publishing) and for the boots we start."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        for name, value in seaweed.environment.items():
            patch.setenv(name, value)
        yield dict(seaweed.environment)


@pytest.fixture
def env(s3env: dict[str, str]) -> dict[str, str]:
    """The environment of a boot: the test's, with only the S3 server's variables added."""
    return clean_environment(s3env)
