"""`podenv deploy` against RunPod's REST API v2 as published: every request it sends is validated
against the OpenAPI document's schemas by devkit.runpod_contract on 127.0.0.1, which answers
with bodies valid against the same document. Create, idempotent re-run, update (a new release
rolls the workers; a scaling change does not), refusals, and the dry run's requests."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devkit.runpod_contract import Contract, ContractServer
from podenv.channels import promote
from podenv.cli import main
from podenv.manifest import Manifest
from podenv.runpod.api import RunPodAPI, RunPodError
from podenv.store import open_store
from tests.manifests import example_manifest
from tests.reference import RUNPOD_OPENAPI, require_reference

pytestmark = pytest.mark.contract
REPOSITORY = Path(__file__).parents[2]
KEY = "rpa_test_key_never_printed"
IMAGE = "ghcr.io/owner/repo-worker@sha256:" + "a" * 64


@pytest.fixture(scope="module")
def document() -> Path:
    return require_reference(RUNPOD_OPENAPI)


@pytest.fixture
def runpod(document: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContractServer]:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    with ContractServer(document, KEY) as server:
        yield server
    assert server.api.violations == [], "the stand-in answered outside the document"


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A file store holding tts 1.0.0 (stable) and 1.1.0."""
    url = f"file://{tmp_path / 'store'}"
    (tmp_path / "store").mkdir()
    releases = open_store(url)
    for version in ("1.0.0", "1.1.0"):
        document = example_manifest()
        document["version"] = version
        releases.put_release("tts", version, Manifest.from_document(document).canonical_bytes())
    promote(releases, "tts", "1.0.0", "stable")
    return url


def deploy(capsys, *arguments: str, file: str = "deploy/tts.yaml") -> tuple[int, str, str]:
    code = main(["deploy", str(REPOSITORY / file), "--image", IMAGE, *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def writes(server: ContractServer) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in server.api.requests if r["method"] != "GET"]


def test_create_then_a_rerun_sends_no_write(runpod: ContractServer, store: str, capsys) -> None:
    code, out, err = deploy(capsys, "--store", store, "--api-url", runpod.url)
    assert code == 0, err
    state = runpod.api.state
    (endpoint,) = state.endpoints.values()
    (template,) = state.templates.values()
    assert out.strip() == endpoint["id"]
    assert sorted(volume["dataCenter"] for volume in state.volumes.values()) == ["EU-RO-1", "US-KS-2"]
    assert sorted(endpoint["networkVolumes"]) == sorted(state.volumes)
    assert endpoint["env"] == template["env"], "the endpoint's container comes from the template"
    assert endpoint["env"]["PODENV_VERSION"] == "1.0.0", "stable's release, pinned"
    assert endpoint["image"] == IMAGE and endpoint["gpu"]["minCudaVersion"] == "12.4"
    assert endpoint["flashboot"] == "FLASHBOOT" and template["serverless"] is True
    assert KEY not in out + err

    sent = len(runpod.api.requests)
    code, out, err = deploy(capsys, "--store", store, "--api-url", runpod.url)
    assert code == 0, err
    assert writes(runpod)[-1] == ("POST", "/v2/serverless"), "nothing written after the first run"
    assert all(r["method"] == "GET" for r in runpod.api.requests[sent:])
    assert "unchanged, nothing sent" in err
    assert state.releases[endpoint["id"]] == 1


def test_a_new_release_is_an_endpoint_update_that_rolls_workers(
    runpod: ContractServer, store: str, capsys
) -> None:
    assert deploy(capsys, "--store", store, "--api-url", runpod.url)[0] == 0
    (endpoint,) = runpod.api.state.endpoints.values()

    code, _, err = deploy(capsys, "--store", store, "--api-url", runpod.url, "--version", "1.1.0")
    assert code == 0, err
    assert writes(runpod)[-2:] == [
        ("PATCH", f"/v2/templates/{next(iter(runpod.api.state.templates))}"),
        ("PATCH", f"/v2/serverless/{endpoint['id']}"),
    ]
    assert endpoint["env"]["PODENV_VERSION"] == "1.1.0"
    assert runpod.api.state.releases[endpoint["id"]] == 2
    assert "RunPod rolls the workers" in err

    # Rolling back is the same update, to the older release.
    assert deploy(capsys, "--store", store, "--api-url", runpod.url, "--version", "1.0.0")[0] == 0
    assert endpoint["env"]["PODENV_VERSION"] == "1.0.0"
    assert runpod.api.state.releases[endpoint["id"]] == 3


def test_a_scaling_change_updates_only_the_scaler(
    runpod: ContractServer, store: str, capsys, tmp_path: Path
) -> None:
    assert deploy(capsys, "--store", store, "--api-url", runpod.url)[0] == 0
    (endpoint,) = runpod.api.state.endpoints.values()
    document = yaml.safe_load((REPOSITORY / "deploy" / "tts.yaml").read_text())
    document["workers"]["max"] = 7
    changed = tmp_path / "tts.yaml"
    changed.write_text(yaml.safe_dump(document))

    code, _, err = deploy(capsys, "--store", store, "--api-url", runpod.url, file=str(changed))
    assert code == 0, err
    (patch,) = [r for r in runpod.api.requests if r["method"] == "PATCH"]
    assert patch["body"] == {"workers": {"min": 0, "max": 7, "idleTimeout": 5}}
    assert runpod.api.state.releases[endpoint["id"]] == 1, "no container change: workers keep running"
    assert "RunPod rolls" not in err


def test_a_refused_field_is_one_line_naming_it(runpod: ContractServer) -> None:
    api = RunPodAPI(KEY, runpod.url)
    body = {"name": "x", "type": "QUEUE", "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}, "image": "i"}
    body["workers"] = {"min": 0, "max": -1}
    body["gpu"] = {"pools": ["ADA_24"]}
    with pytest.raises(RunPodError) as refused:
        api.call("POST", "/v2/serverless", body)
    message = str(refused.value)
    assert "\n" not in message and KEY not in message
    assert message.startswith("RunPod refused POST /v2/serverless (422 Unprocessable Entity): $.workers.max:")


def test_a_wrong_key_and_a_volume_elsewhere_are_one_line_each(
    runpod: ContractServer, store: str, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong")
    code, _, err = deploy(capsys, "--store", store, "--api-url", runpod.url)
    assert code == 12
    assert err.strip().splitlines()[-1] == (
        "podenv: error: RunPod refused GET /v2/network-volumes (401 Unauthorized): invalid API key."
    )

    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    volume = RunPodAPI(KEY, runpod.url).call(
        "POST", "/v2/network-volumes", {"name": "v", "size": 10, "dataCenter": "US-TX-3"}
    )
    document = yaml.safe_load((REPOSITORY / "deploy" / "tts.yaml").read_text())
    document["volumes"] = [{"datacenter": "EU-RO-1", "id": volume["id"]}]
    elsewhere = tmp_path / "tts.yaml"
    elsewhere.write_text(yaml.safe_dump(document))
    code, _, err = deploy(capsys, "--store", store, "--api-url", runpod.url, file=str(elsewhere))
    assert code == 12
    assert f"network volume {volume['id']} is in US-TX-3, not EU-RO-1" in err.strip().splitlines()[-1]
    assert not runpod.api.state.templates, "nothing created after a refusal"


def test_no_key_no_deploy(store: str, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    code, _, err = deploy(capsys, "--store", store)
    assert code == 12
    assert "RUNPOD_API_KEY is not set" in err


@pytest.mark.parametrize("file", ["deploy/tts.yaml", "deploy/asr.yaml"])
def test_the_dry_run_of_the_repositorys_deploy_file_prints_valid_v2_requests(
    document: Path, store: str, capsys, monkeypatch: pytest.MonkeyPatch, file: str
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    if "asr" in file:
        releases = open_store(store)
        asr = example_manifest()
        asr["name"] = "asr"
        releases.put_release("asr", "1.0.0", Manifest.from_document(asr).canonical_bytes())
        promote(releases, "asr", "1.0.0", "stable")
    code = main(["deploy", str(REPOSITORY / file), "--store", store, "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    calls = json.loads(captured.out)
    contract = Contract(document)

    assert [call["method"] for call in calls] == ["POST", "POST", "POST", "POST"]
    for call in calls:
        operation, _ = contract.find(call["method"], call["path"])
        assert contract.request_errors(operation, call["body"]) == [], call["why"]


def test_warm_finds_volumes_by_name_and_says_when_a_deploy_must_come_first(
    runpod: ContractServer, store: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_S3_ACCESS_KEY", "user_x")
    monkeypatch.setenv("RUNPOD_S3_SECRET_KEY", "rps_secret")
    warm = ["warm", "1.0.0", "--volumes", str(REPOSITORY / "deploy/tts.yaml"), "--store", store]

    assert main([*warm, "--api-url", runpod.url]) == 12
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"podenv: error: first `podenv deploy {REPOSITORY / 'deploy/tts.yaml'}`: ")
    assert line.endswith("it would create network volume podenv-tts-eu-ro-1 (10 GB) in EU-RO-1.")
    assert writes(runpod) == [], "warming never creates volumes"
