"""The same Snakefile on a cluster (docs/build-cluster.md): snakemake-executor-plugin-cluster-generic
runs every job as a separate process in a fresh directory of its own (devkit/minicluster.py), and
snakemake-storage-plugin-s3 is the default storage provider against SeaweedFS, so the jobs share
nothing but S3 (the workflow's sources travel through it too). The release it publishes boots."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devkit.demoproject import build_channel_dir, create_project
from devkit.seaweed import SeaweedServer
from podenv.store import open_store
from tests.integration.boot_support import REPOSITORY, boot_argv, clean_environment, run
from tests.integration.test_pipeline import ran_rules

pytestmark = pytest.mark.s3
MINICLUSTER = REPOSITORY / "devkit" / "minicluster.py"
# What a fork's checkout holds besides its project files: the workflow itself.
WORKFLOW = ("Snakefile", "rules", "config/schema.yaml", "profiles")


def _checkout(project: Path) -> None:
    """The project as a git checkout with the workflow in it: Snakemake deploys `git ls-files`."""
    for name in WORKFLOW:
        source, target = REPOSITORY / name, project / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "add", "-A"], check=True)


@pytest.fixture(scope="module")
def cluster_build(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> dict[str, object]:
    run_id = uuid.uuid4().hex[:12]
    store = f"s3://{seaweed.bucket}/cluster-{run_id}"
    storage = f"s3://{seaweed.bucket}/snakemake-{run_id}"
    channel_dir = tmp_path_factory.mktemp("channel")
    build_channel_dir(channel_dir)
    project = create_project(tmp_path_factory.mktemp("project"), REPOSITORY, store, channel_dir)
    _checkout(project)
    state = tmp_path_factory.mktemp("scheduler")
    python = sys.executable
    command = [python, "-m", "snakemake", "publish", "--executor", "cluster-generic", "--jobs", "4"]
    command += ["--cluster-generic-submit-cmd", f"{python} {MINICLUSTER} submit {state}"]
    command += ["--cluster-generic-status-cmd", f"{python} {MINICLUSTER} status {state}"]
    command += ["--shared-fs-usage", "none", "--job-deploy-sources"]
    command += ["--default-storage-provider", "s3", "--default-storage-prefix", storage]
    command += ["--storage-s3-endpoint-url", seaweed.endpoint, "--config", "channel=stable"]
    environment = clean_environment(seaweed.environment)
    environment["PATH"] = f"{Path(python).parent}{os.pathsep}{environment['PATH']}"
    environment["SNAKEMAKE_STORAGE_S3_ACCESS_KEY"] = seaweed.environment["AWS_ACCESS_KEY_ID"]
    environment["SNAKEMAKE_STORAGE_S3_SECRET_KEY"] = seaweed.environment["AWS_SECRET_ACCESS_KEY"]
    result = subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, timeout=900, check=False
    )
    logs = "\n".join(path.read_text(errors="replace")[-2000:] for path in sorted(state.glob("jobs/*/log")))
    assert result.returncode == 0, (result.stderr[-4000:], logs[-6000:])
    return {"project": project, "state": state, "store": store, "storage": storage, "result": result}


def test_every_rule_ran_as_a_job_in_a_directory_of_its_own(cluster_build: dict[str, object]) -> None:
    result = cluster_build["result"]
    assert isinstance(result, subprocess.CompletedProcess)
    jobs = sorted(Path(str(cluster_build["state"])).glob("jobs/*/work"))
    remote = [name for name in ran_rules(result) if name not in ("publish",)]  # publish: local target
    assert sorted(remote) == ["build_model", "env_layer", "make_release", "pack_code", "publish_release"]
    assert len(jobs) == len(remote)
    for work in jobs:
        # The installed prefix never left its rule, and no job saw another's built files.
        assert not list(work.rglob("prefix/conda-meta"))
    # Nothing was built in the checkout the workflow started from: it all went through S3.
    assert not (Path(str(cluster_build["project"])) / "build").exists()


def test_the_layers_went_through_s3_as_files(
    cluster_build: dict[str, object], seaweed: SeaweedServer
) -> None:
    import boto3

    bucket, prefix = str(cluster_build["storage"]).removeprefix("s3://").split("/", 1)
    client = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    )
    keys = {
        item["Key"].removeprefix(f"{prefix}/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }
    assert {"build/demo/env.json", "build/demo/code.json", "build/demo/code.tar.zst"} <= keys
    assert "build/demo/env-shards.tar" in keys  # the env's shards and index as one plain file
    assert not [key for key in keys if key.startswith("build/demo/prefix")]


def test_the_release_published_from_the_cluster_boots(
    cluster_build: dict[str, object], s3env: dict[str, str], tmp_path: Path
) -> None:
    store = str(cluster_build["store"])
    assert open_store(store).read_channel("demo", "stable") is not None
    argv = boot_argv(tmp_path / "volume", "demo", store, ["--channel", "stable"])
    argv += ["--exec", "--", "python", "-c", "import greeting; print(greeting.hello('cluster'))"]
    done = run(argv, clean_environment(s3env))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "hello cluster from greeting 1.0"
