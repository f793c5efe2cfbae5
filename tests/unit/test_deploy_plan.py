"""What `podenv deploy` asks RunPod for, decided without RunPod: the deploy file's schema, the
sizes taken from the release, the worker's variables (secrets only as references), and the
requests a dry run records. The same requests against RunPod's published contract:
tests/integration/test_deploy_contract.py."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from podenv.deployfile import DeployFileError, load_deploy_file
from podenv.manifest import Manifest
from podenv.runpod.deploy import Session, changed_fields, deploy, worker_environment
from podenv.runpod.sizing import GIB, cuda_floor, init_timeout_seconds, sizes_for
from tests.manifests import example_manifest

REPOSITORY = Path(__file__).parents[2]
DEPLOY_FILES = sorted((REPOSITORY / "deploy").glob("*.yaml"))
IMAGE = "ghcr.io/owner/repo-worker@sha256:" + "a" * 64
SECRET_REFERENCE = re.compile(r"^\{\{ RUNPOD_SECRET_[A-Za-z0-9_-]+ \}\}$")


def _write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / f"{document.get('endpoint', 'x')}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _document() -> dict:
    return yaml.safe_load((REPOSITORY / "deploy" / "tts.yaml").read_text())


def _manifest(env_unpacked: int = 9 * GIB, files: int = 60_000, cuda: str | None = "12.4") -> Manifest:
    document = example_manifest()
    document["cuda"] = cuda
    env_layer = document["layers"][0]
    env_layer.update(size=4 * GIB, unpacked_size=env_unpacked, files=files)
    document["layers"][1].update(size=GIB, unpacked_size=2 * GIB, files=10)
    return Manifest.from_document(document)


def test_the_repositorys_deploy_files_are_valid_and_name_envs_that_exist() -> None:
    assert DEPLOY_FILES, "deploy/ has no deploy file"
    for path in DEPLOY_FILES:
        spec = load_deploy_file(path)
        assert (REPOSITORY / "envs" / f"{spec.env}.yaml").is_file(), path
        assert spec.endpoint == f"podenv-{spec.env}"
        assert "output" not in spec.document, "the output bucket is left out unless the user sets it"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["gpu"].update(pools=[]), "$.gpu.pools"),
        (lambda d: d.update(image="ghcr.io/owner/repo-worker:main"), "$.image"),
        (lambda d: d["workers"].update(max=0), "$.workers.max"),
        (lambda d: d["variables"].update(AWS_SECRET_ACCESS_KEY="hunter2"), "$.variables"),
        (lambda d: d["secrets"].update(AWS_ACCESS_KEY_ID="{{ x }}"), "$.secrets.AWS_ACCESS_KEY_ID"),
        (lambda d: d.update(bogus=1), "$"),
        (lambda d: d["volumes"].append({"datacenter": "eu-ro-1"}), "$.volumes[2].datacenter"),
    ],
)
def test_a_bad_deploy_file_is_refused_in_one_line_naming_it(tmp_path: Path, change, named: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(DeployFileError) as refused:
        load_deploy_file(_write(tmp_path, document))
    message = str(refused.value)
    assert "\n" not in message
    assert f"is invalid at {named}:" in message
    assert "hunter2" not in message


def test_rules_beyond_the_schema_are_one_line_each(tmp_path: Path) -> None:
    document = _document()
    document["workers"].update(min=4, max=2)
    with pytest.raises(DeployFileError, match=r"workers.min \(4\) is above workers.max \(2\)"):
        load_deploy_file(_write(tmp_path, document))
    document = _document()
    document["volumes"] = [{"datacenter": "EU-RO-1"}, {"datacenter": "EU-RO-1", "id": "v1"}]
    with pytest.raises(DeployFileError, match="datacenter twice"):
        load_deploy_file(_write(tmp_path, document))


def test_sizes_come_from_the_release() -> None:
    manifest = _manifest()
    on_volume = sizes_for(manifest, "volume", has_volume=True)
    local = sizes_for(manifest, "local", has_volume=True)
    no_volume = sizes_for(manifest, "volume", has_volume=False)

    assert on_volume.container_disk_gb == 10, "the env is on the volume: image and scratch only"
    assert local.container_disk_gb == 10 + 10, "9 GiB unpacked + 10 % margin, rounded up"
    assert no_volume.container_disk_gb > local.container_disk_gb, "models too, without a volume"
    assert on_volume.volume_gb > local.volume_gb, "local placement keeps only the env's blob on the volume"
    # 60,000 files on a network volume cost ~93 s more than on the local disk.
    assert on_volume.cold_boot_s - local.cold_boot_s == pytest.approx(60_000 * 62 / 40_000, abs=1)
    assert on_volume.init_timeout_s >= 2 * on_volume.cold_boot_s
    assert on_volume.min_cuda == "12.4"


def test_the_default_placement_is_local_with_the_container_disk_sized_for_the_env(tmp_path: Path) -> None:
    document = _document()
    document.pop("placement", None)
    spec = load_deploy_file(_write(tmp_path, document))
    manifest = _manifest()
    sizes = sizes_for(manifest, spec["placement"], bool(spec.volumes))

    assert spec["placement"] == "local", "ADR 0013: the env on the worker's disk by default"
    assert sizes.container_disk_gb == 10 + 10, "image and scratch + 9 GiB env unpacked + 10 %"
    env = worker_environment(spec, manifest, sizes)
    assert env["PODENV_PLACEMENT"] == "local", "explicit: the worker's own default depends on RunPod"


def test_cuda_floor_and_init_timeout_rules() -> None:
    assert cuda_floor(None) is None
    assert cuda_floor("12") == "12.0"
    assert cuda_floor("12.4.1") == "12.4"
    assert init_timeout_seconds(10) == 600, "never under 600 s"
    assert init_timeout_seconds(400) == 840, "twice the estimate, in whole minutes"


def test_the_worker_is_pinned_to_the_release_and_gets_secrets_only_as_references() -> None:
    spec = load_deploy_file(REPOSITORY / "deploy" / "tts.yaml")
    manifest = _manifest()
    env = worker_environment(spec, manifest, sizes_for(manifest, "volume", True))

    assert env["PODENV_VERSION"] == manifest.version and env["PODENV_DIGEST"] == manifest.digest
    assert "PODENV_CHANNEL" not in env, "a pinned worker never follows a channel"
    assert int(env["RUNPOD_INIT_TIMEOUT"]) >= 600
    for name, value in env.items():
        if name.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_ENDPOINT", "BUCKET_")):
            assert SECRET_REFERENCE.match(value), name
    assert not any(name.startswith(("BUCKET_", "PODENV_OUTPUT")) for name in env)


def test_an_output_bucket_is_added_only_when_set(tmp_path: Path) -> None:
    document = _document()
    document["output"] = {
        "bucket": "audio-out",
        "secrets": {
            "BUCKET_ENDPOINT_URL": "out_url",
            "BUCKET_ACCESS_KEY_ID": "out_id",
            "BUCKET_SECRET_ACCESS_KEY": "out_secret",
        },
    }
    spec = load_deploy_file(_write(tmp_path, document))
    manifest = _manifest()
    env = worker_environment(spec, manifest, sizes_for(manifest, "volume", True))

    assert env["PODENV_OUTPUT_BUCKET"] == "audio-out"
    assert env["BUCKET_SECRET_ACCESS_KEY"] == "{{ RUNPOD_SECRET_out_secret }}"


def test_without_volumes_the_worker_is_told_container_disk_is_intended(tmp_path: Path) -> None:
    document = _document()
    document["volumes"] = []
    spec = load_deploy_file(_write(tmp_path, document))
    result = deploy(spec, _manifest(), IMAGE, Session(None, dry_run=True))
    template, endpoint = (call.body for call in result.calls)

    assert template["env"]["PODENV_ALLOW_NO_VOLUME"] == "1"
    assert template["disk"] > 10
    assert endpoint["networkVolumes"] == [] and endpoint["dataCenterIds"] == []


def test_a_dry_run_without_a_key_records_creates_in_order() -> None:
    spec = load_deploy_file(REPOSITORY / "deploy" / "tts.yaml")
    result = deploy(spec, _manifest(), IMAGE, Session(None, dry_run=True))
    calls = [(call.method, call.path) for call in result.calls]

    assert calls == [
        ("POST", "/v2/network-volumes"),
        ("POST", "/v2/network-volumes"),
        ("POST", "/v2/templates"),
        ("POST", "/v2/serverless"),
    ]
    endpoint = result.calls[-1].body
    assert endpoint["templateId"] == "<new template podenv-tts>"
    assert endpoint["dataCenterIds"] == ["EU-RO-1", "US-KS-2"]
    assert endpoint["gpu"]["minCudaVersion"] == "12.4"
    assert endpoint["flashboot"] == "FLASHBOOT"


def test_a_release_of_another_env_is_refused() -> None:
    spec = load_deploy_file(REPOSITORY / "deploy" / "asr.yaml")
    with pytest.raises(Exception, match="deploys env asr, but the release is of tts"):
        deploy(spec, _manifest(), IMAGE, Session(None, dry_run=True))


def test_comparison_ignores_order_and_sees_a_stale_cuda_set() -> None:
    want = {
        "dataCenterIds": ["A", "B"],
        "gpu": {"pools": ["X", "Y"], "count": 1, "allowedCudaVersions": [], "minCudaVersion": "12.4"},
    }
    have = copy.deepcopy(want)
    have["dataCenterIds"] = ["B", "A"]
    have["gpu"]["pools"] = ["Y", "X"]
    assert changed_fields(want, have) == []
    have["gpu"]["allowedCudaVersions"] = ["12.8"]
    assert changed_fields(want, have) == ["gpu"]


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    from podenv.channels import promote
    from podenv.store import open_store

    (tmp_path / "store").mkdir()
    url = f"file://{tmp_path / 'store'}"
    open_store(url).put_release("tts", "1.0.0", _manifest().canonical_bytes())
    promote(open_store(url), "tts", "1.0.0", "stable")
    return url


def _dry_run(capsys, store: str, *options: str) -> tuple[int, str]:
    from podenv.cli import main

    code = main(["deploy", str(REPOSITORY / "deploy" / "tts.yaml"), "--store", store, "--dry-run", *options])
    captured = capsys.readouterr()
    return code, captured.out if code == 0 else captured.err.strip().splitlines()[-1]


def test_the_channel_is_resolved_once_and_pinned(file_store: str, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    code, out = _dry_run(capsys, file_store)

    assert code == 0
    template = next(call for call in json.loads(out) if call["path"] == "/v2/templates")
    assert template["body"]["env"]["PODENV_VERSION"] == "1.0.0"
    assert template["body"]["env"]["PODENV_DIGEST"] == _manifest().digest


def test_a_missing_or_garbled_channel_is_one_line(
    file_store: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    code, line = _dry_run(capsys, file_store, "--channel", "canary")
    assert code == 4 and line.startswith("podenv: error: channel canary of tts does not exist")

    pointer = next((tmp_path / "store").rglob("stable.json"))
    pointer.write_text("{not json")
    code, line = _dry_run(capsys, file_store)
    assert code != 0 and "channel stable of tts" in line and "is not a channel pointer" in line

    code, line = _dry_run(capsys, file_store, "--version", "../../etc")
    assert code != 0 and "is not a valid version" in line
