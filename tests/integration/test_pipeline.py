"""`snakemake build_env build_models release publish` end to end: a local conda channel, a
pixi.lock written with py-rattler, a real PyPI wheel, and a real S3 server."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.demoproject import (
    IDNA,
    JMESPATH,
    SIX,
    build_channel_dir,
    create_project,
    write_env_spec,
    write_model,
)
from podenv.archive import Limits, extract_shard
from podenv.blobpool import make_directories, make_links
from podenv.catalog import load_index
from podenv.digests import digest_bytes
from podenv.fileio import read_file_chunks
from podenv.manifest import Manifest
from podenv.shards import parse_index
from podenv.store import open_store
from tests.integration.pipeline_support import REPOSITORY, snakemake

# idna has a console script, jmespath a `scripts=` file (bin/jp.py): neither may tie its shard to
# the build directory (the script's RECORD row, the script's byte-code).
WHEELS = [SIX, IDNA, JMESPATH]


def shard_digests(project: Path) -> dict[str, str]:
    index = json.loads((project / "build/demo/env-shards/index.json").read_text())
    return {shard["name"]: shard["digest"] for shard in index["shards"]}


def install_built_layer(layer: Path, target: Path) -> None:
    """What a worker does with a sharded env layer, from the build directory instead of a store."""
    index_bytes = (layer / "index.json").read_bytes()
    index = parse_index(index_bytes, digest_bytes(index_bytes))
    make_directories(target, index, writers=0)
    directories = frozenset(("", *index.directories))
    for shard in index.shards:
        chunks = read_file_chunks(layer / shard.digest.removeprefix("sha256:"))
        limits = Limits(bytes=shard.unpacked_size, files=shard.files)
        label = shard.name
        extract_shard(chunks, target, directories, expected_digest=shard.digest, label=label, limits=limits)
    make_links(target, index, "env")


def ran_rules(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The rules Snakemake ran, from its own job lines."""
    output = result.stdout + result.stderr
    jobs = [line for line in output.splitlines() if line.startswith(("rule ", "localrule "))]
    return sorted(line.split()[1].rstrip(":") for line in jobs)


@pytest.fixture(scope="module")
def channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("channel")
    build_channel_dir(directory, ("1.0", "1.1"))
    return directory


@pytest.fixture(scope="module")
def s3_store(seaweed) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in seaweed.environment.items():
            patch.setenv(name, value)
        yield f"s3://{seaweed.bucket}/pipeline-{os.getpid()}"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, channel_dir: Path, s3_store: str) -> Path:
    project = tmp_path_factory.mktemp("project")
    create_project(project, REPOSITORY, s3_store, channel_dir, wheels=WHEELS)
    result = snakemake(project, "build_env", "build_models", "release", "publish")
    assert result.returncode == 0, result.stderr[-3000:]
    return project


def test_publish_puts_layers_and_release_in_the_store(published: Path, s3_store: str) -> None:
    receipt = json.loads((published / "build/demo/published.json").read_text())
    store = open_store(s3_store)
    release = json.loads(store.get_release("demo", "1.0.0"))

    env, code, model = release["layers"]
    assert (env["kind"], env["media_type"]) == ("env", "application/vnd.podenv.layer.v2.shards+json")
    assert model["media_type"] == "application/vnd.podenv.layer.v1.tar+zstd"
    assert (code["kind"], code["media_type"]) == ("code", "application/vnd.podenv.layer.v1.tar+zstd")
    assert release["bootstrap"] == {"podenv": "0.2.0"}
    for layer in (code, model):
        assert store.blob_size(layer["digest"]) == layer["size"]
    # The env's blobs: its index, and one shard per package (and one for files no package owns).
    index = load_index(store, Manifest.from_document(release).layers[0])
    assert {shard.name for shard in index.shards} >= {"conda-python", "conda-greeting", "pypi-six", "unowned"}
    blobs = [env["digest"], *[shard.digest for shard in index.shards]]
    assert sum(store.blob_size(digest) for digest in blobs) == env["size"]
    assert receipt["release_created"]
    assert sorted(receipt["uploaded_blobs"]) == sorted([*blobs, code["digest"], model["digest"]])
    assert {p["name"] for p in release["sbom"]["conda"]} == {"python", "greeting"}
    assert {p["name"]: p["sha256"] for p in release["sbom"]["pypi"]} == {
        wheel.name: wheel.sha256 for wheel in WHEELS
    }
    assert store.release_digest("demo", "1.0.0") == receipt["digest"]


def test_packed_env_runs_its_own_python_elsewhere(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "somewhere" / "else"
    target.parent.mkdir()
    install_built_layer(published / "build/demo/env-shards", target)
    python = target / "bin" / "python"
    subprocess.run([str(python), str(target / "bin" / "conda-unpack")], check=True)

    result = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, six, greeting; print(sys.prefix, six.__version__, greeting.hello('ci'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert result.stdout.split() == [str(target), "1.17.0", "hello", "ci", "from", "greeting", "1.0"]
    assert (target / "lib/python3.11/podenv-prefix.txt").read_text().strip() == f"prefix={target}"


def test_rerun_is_a_no_op(published: Path) -> None:
    result = snakemake(published, "publish")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr
    assert ran_rules(result) == []


def test_changing_only_a_model_rebuilds_and_uploads_only_that_layer(
    published: Path, tmp_path: Path, s3_store: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(published, project, symlinks=True)
    env_digest = json.loads((project / "build/demo/env.json").read_text())["layer"]["digest"]
    code_digest = json.loads((project / "build/demo/code.json").read_text())["layer"]["digest"]
    write_model(project / "models" / "demo-model", "r2")
    write_env_spec(project / "envs" / "demo.yaml", "1.1.0", "r2")

    result = snakemake(project, "publish")

    assert result.returncode == 0, result.stderr[-3000:]
    assert ran_rules(result) == ["build_model", "make_release", "publish", "publish_release"]
    receipt = json.loads((project / "build/demo/published.json").read_text())
    model = json.loads((project / "build/demo/models/demo-model.json").read_text())["layer"]
    assert receipt["version"] == "1.1.0"
    assert receipt["uploaded_blobs"] == [model["digest"]]
    assert env_digest in receipt["present_blobs"] and code_digest in receipt["present_blobs"]
    assert len(receipt["present_blobs"]) > 5  # the code, and the env's index and shards


def test_changing_only_a_plugin_repacks_and_uploads_only_the_code_layer(
    published: Path, tmp_path: Path, s3_store: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(published, project, symlinks=True)
    before = {
        name: json.loads((project / f"build/demo/{name}.json").read_text())["layer"]
        for name in ("env", "code")
    }
    plugin = project / "worker" / "models" / "demo.py"
    plugin.write_text(plugin.read_text() + "\n# a plugin change\n")

    result = snakemake(project, "publish", "--config", "version=1.0.1")

    assert result.returncode == 0, result.stderr[-3000:]
    assert ran_rules(result) == ["make_release", "pack_code", "publish", "publish_release"]
    receipt = json.loads((project / "build/demo/published.json").read_text())
    code = json.loads((project / "build/demo/code.json").read_text())["layer"]
    assert code["digest"] != before["code"]["digest"]
    assert receipt["uploaded_blobs"] == [code["digest"]]
    assert before["env"]["digest"] in receipt["present_blobs"]


def test_same_lock_in_another_directory_gives_the_same_env_digest(
    published: Path, tmp_path: Path, channel_dir: Path, s3_store: str
) -> None:
    other = tmp_path / "elsewhere" / "deeper"
    create_project(other, REPOSITORY, s3_store, channel_dir, wheels=WHEELS)
    shutil.copy(published / "pixi.lock", other / "pixi.lock")

    result = snakemake(other, "build_env")

    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((published / "build/demo/env.json").read_text())["layer"]["digest"]
    second = json.loads((other / "build/demo/env.json").read_text())["layer"]["digest"]
    assert first == second
    assert shard_digests(published) == shard_digests(other)


def test_one_changed_package_changes_only_its_shard_and_the_unowned_one(
    published: Path, tmp_path: Path, channel_dir: Path, s3_store: str
) -> None:
    other = create_project(
        tmp_path / "next", REPOSITORY, s3_store, channel_dir, greeting_version="1.1", wheels=WHEELS
    )

    result = snakemake(other, "build_env")

    assert result.returncode == 0, result.stderr[-3000:]
    before, after = shard_digests(published), shard_digests(other)
    assert before.keys() == after.keys()
    assert sorted(name for name in before if before[name] != after[name]) == ["conda-greeting", "unowned"]


def test_publishing_an_existing_version_with_other_content_is_refused(
    published: Path, tmp_path: Path, s3_store: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(published, project, symlinks=True)
    write_model(project / "models" / "demo-model", "r3")
    write_env_spec(project / "envs" / "demo.yaml", "1.0.0", "r3")

    result = snakemake(project, "publish")

    assert result.returncode != 0
    log = (project / "logs/demo/publish.log").read_text()
    assert "release demo 1.0.0 already exists" in log and "never overwritten" in log
    assert (
        not (project / "build/demo/published.json").exists()
        or json.loads((project / "build/demo/published.json").read_text())["version"] == "1.0.0"
    )
    model = json.loads((project / "build/demo/models/demo-model.json").read_text())["layer"]
    assert open_store(s3_store).blob_size(model["digest"]) is None
