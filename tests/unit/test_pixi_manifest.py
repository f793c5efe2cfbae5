"""pixi.toml: valid against pixi's own manifest schema, and shaped the way podenv relies on."""

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from podenv.envspec import load_env_spec
from tests.reference import PIXI_MANIFEST_SCHEMA

ROOT = Path(__file__).parents[2]
MANIFEST = ROOT / "pixi.toml"
SCHEMA = PIXI_MANIFEST_SCHEMA
WORKER_ENVIRONMENTS = ("tts", "asr")
# CUDA 12.4 is what driver 550 supports; the solve must not assume a newer driver.
OLDEST_DRIVER_CUDA = (12, 4)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split("."))


def _spec_version(spec: str | dict[str, Any]) -> str:
    """The version part of a pixi dependency: "2.8.*" or {version = "2.8.*", build = ...}."""
    return spec["version"] if isinstance(spec, dict) else spec


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return tomllib.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        pytest.fail(f"pixi's manifest schema is missing at {SCHEMA}")
    return json.loads(SCHEMA.read_text())


@pytest.mark.contract
def test_manifest_is_valid_against_pixis_schema(manifest: dict[str, Any], schema: dict[str, Any]) -> None:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(manifest), key=lambda error: error.json_path)
    assert not errors, "\n".join(f"{error.json_path}: {error.message}" for error in errors)


@pytest.mark.contract
def test_the_schema_check_catches_a_wrong_manifest(manifest: dict[str, Any], schema: dict[str, Any]) -> None:
    broken = {**manifest, "system-requirements": {"cuda": ""}, "no-such-table": {}}
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert len(list(validator.iter_errors(broken))) >= 2


def test_workspace_targets_linux_64_from_conda_forge(manifest: dict[str, Any]) -> None:
    workspace = manifest["workspace"]
    assert workspace["platforms"] == ["linux-64"]
    assert workspace["channels"][0] == "conda-forge"


@pytest.mark.parametrize("name", WORKER_ENVIRONMENTS)
def test_worker_environments_exist_and_share_the_default_feature(manifest: dict[str, Any], name: str) -> None:
    environment = manifest["environments"][name]
    features = environment["features"] if isinstance(environment, dict) else environment
    assert name in features
    assert name in manifest["feature"]
    assert not (isinstance(environment, dict) and environment.get("no-default-feature"))


def test_cuda_system_requirement_fits_driver_550(manifest: dict[str, Any]) -> None:
    cuda = manifest["system-requirements"]["cuda"]
    assert (12,) <= _version(cuda) <= OLDEST_DRIVER_CUDA, f"cuda = {cuda!r}"


def test_build_tooling_environments_need_no_gpu(manifest: dict[str, Any]) -> None:
    for name, environment in manifest["environments"].items():
        if name in WORKER_ENVIRONMENTS:
            continue
        assert isinstance(environment, dict) and environment.get("no-default-feature"), name


def test_python_is_3_11(manifest: dict[str, Any]) -> None:
    assert re.fullmatch(r"(==|~=)?3\.11(\.\*)?", _spec_version(manifest["dependencies"]["python"]))


def test_torch_stack_is_pinned_to_2_8_cuda_12(manifest: dict[str, Any]) -> None:
    conda = manifest["dependencies"]
    for name in ("pytorch", "torchaudio"):
        assert _spec_version(conda[name]).startswith("2.8"), name
        assert conda[name]["build"].startswith("cuda12"), name
    assert "torch" not in manifest.get("pypi-dependencies", {}), "torch must come from conda, not PyPI"
    torchvision = manifest["feature"]["asr"]["dependencies"]["torchvision"]
    assert _spec_version(torchvision).startswith("0.23")


@pytest.mark.parametrize(("feature", "package"), [("tts", "f5-tts"), ("asr", "whisperx")])
def test_model_libraries_are_pinned_exactly(manifest: dict[str, Any], feature: str, package: str) -> None:
    spec = manifest["feature"][feature]["pypi-dependencies"][package]
    assert re.fullmatch(r"==\d+(\.\d+)+", _spec_version(spec)), spec


@pytest.mark.parametrize("name", WORKER_ENVIRONMENTS)
def test_env_yaml_names_an_environment_of_the_manifest(manifest: dict[str, Any], name: str) -> None:
    spec = load_env_spec(ROOT / "envs" / f"{name}.yaml")
    assert spec.pixi_environment in manifest["environments"]
    for model in spec.models:
        if model.source == "hf":
            assert model.document.get("allow_patterns"), f"{name}/{model.name} would download a whole repo"
