"""A release carries its handler code (ADR 0014): two releases built by the pipeline whose demo
plugin answers differently; booting each serves its own plugin, so rolling back restores the
older code with the env and models. The worker runs from a checkout whose own worker/ has the
newer code on purpose: only the release's code layer may be imported. And a release that needs
a newer bootstrap than the image's podenv is refused in one line."""

import json
import uuid
from pathlib import Path

import pytest

from devkit.demoproject import build_channel_dir, create_project, worker_wheels
from devkit.localworker import LocalWorker
from devkit.seaweed import SeaweedServer
from podenv import __version__
from podenv.store import open_store
from tests.integration.boot_support import (
    PODENV,
    REPOSITORY,
    LayerSource,
    boot_argv,
    clean_environment,
    publish_release,
    run,
    write_small_env,
)
from tests.integration.pipeline_support import snakemake

pytestmark = pytest.mark.s3
ORIGINAL = '"text": self._greeting.hello(request.name),'
CHANGED = '"text": self._greeting.hello(request.name) + " (plugin 2)",'


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> dict[str, str]:
    """demo 1.0.0 with the repository's plugin, demo 2.0.0 with the plugin changed."""
    store = f"s3://{seaweed.bucket}/code-{uuid.uuid4().hex[:12]}"
    channel_dir = tmp_path_factory.mktemp("channel")
    build_channel_dir(channel_dir)
    project = create_project(
        tmp_path_factory.mktemp("project"), REPOSITORY, store, channel_dir, wheels=worker_wheels()
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in seaweed.environment.items():
            patch.setenv(name, value)
        first = snakemake(project, "publish", "--config", "version=1.0.0")
        assert first.returncode == 0, first.stderr[-3000:]
        plugin = project / "worker" / "models" / "demo.py"
        assert ORIGINAL in plugin.read_text()
        plugin.write_text(plugin.read_text().replace(ORIGINAL, CHANGED))
        second = snakemake(project, "publish", "--config", "version=2.0.0")
        assert second.returncode == 0, second.stderr[-3000:]
    return {"store": store, "project": str(project), **clean_environment(seaweed.environment)}


def _layers(store_url: str, version: str) -> dict[str, str]:
    document = json.loads(open_store(store_url).get_release("demo", version))
    return {layer["name"]: layer["digest"] for layer in document["layers"]}


def _serve(releases: dict[str, str], root: Path, version: str, cwd: Path) -> tuple[dict, dict]:
    environment = {k: v for k, v in releases.items() if k not in ("store", "project")}
    environment.update(PODENV_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    command = [*PODENV, "boot", "--root", str(root), "--env", "demo", "--store", releases["store"]]
    command += ["--version", version, "--require-code", "--exec", "--", "python", "-m", "worker.handler"]
    with LocalWorker(command, environment, root.parent / f"{version}.log", cwd=cwd) as worker:
        answer = worker.runsync({"name": "rollback"})
        boot = next(event for event in worker.log_events() if "bytes_fetched" in event)
    assert answer["status"] == "COMPLETED", answer
    return answer["output"], boot


def test_only_the_code_layer_differs_between_the_two_releases(
    releases: dict[str, str], s3env: dict[str, str]
) -> None:
    one, two = _layers(releases["store"], "1.0.0"), _layers(releases["store"], "2.0.0")
    assert set(one) == set(two) and "code" in one
    assert [name for name in one if one[name] != two[name]] == ["code"]


def test_a_rollback_restores_the_older_plugin(releases: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "volume" / "podenv"
    # The working directory holds the newer plugin: a handler imported from it would say so.
    checkout = Path(releases["project"])

    newer, boot = _serve(releases, root, "2.0.0", checkout)
    assert newer["text"] == "hello rollback from greeting 1.0 (plugin 2)"
    assert boot["layers"]["code"] == "installed"

    older, boot = _serve(releases, root, "1.0.0", checkout)
    assert older["text"] == "hello rollback from greeting 1.0"
    # The env and the model were already on the volume; only the older code was fetched.
    assert boot["layers"]["code"] == "installed"
    assert {name: state for name, state in boot["layers"].items() if name != "code"} == {
        name: "present" for name in boot["layers"] if name != "code"
    }


def test_an_image_older_than_the_release_refuses_it_in_one_line(
    seaweed: SeaweedServer, s3env: dict[str, str], tmp_path: Path
) -> None:
    """The release says it needs a newer bootstrap than this podenv: boot refuses before it
    reads anything else of the manifest (a newer schema would be unreadable here anyway)."""
    store_url = f"s3://{seaweed.bucket}/bootstrap-{uuid.uuid4().hex[:8]}"
    env_tree = write_small_env(tmp_path / "env", "1.0")
    published = publish_release(store_url, "demo", "1.0.0", [LayerSource("env", env_tree)], tmp_path / "b")
    document = dict(published.manifest.document, version="3.0.0", bootstrap={"podenv": "99.0.0"})
    document["schema_version"] = 99  # a future format: the bootstrap sentence comes first
    open_store(store_url).put_release("demo", "3.0.0", json.dumps(document).encode())

    done = run(
        boot_argv(tmp_path / "volume", "demo", store_url, ["--version", "3.0.0"]), clean_environment(s3env)
    )

    assert done.returncode == 9, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "needs podenv" in line]
    assert len(errors) == 1
    needs = "release demo 3.0.0 needs podenv 99.0.0 or newer to boot"
    assert f"{needs}, and this worker image has podenv {__version__}" in errors[0]
    assert "build the worker image (worker/Dockerfile) from podenv 99.0.0 or newer" in errors[0]
    assert not list((tmp_path / "volume").glob("layers/*"))  # nothing installed
