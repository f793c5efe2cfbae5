"""The deployment files: the worker image, its pinned requirements, the workflows and the
RunPod template, checked with the linters the project pins (hadolint, actionlint, zizmor)
and against what podenv really reads."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from podenv.volume import DEFAULT_ROOT

REPOSITORY = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPOSITORY / ".github" / "workflows").glob("*.yml"))
EXPORT = ["export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt"]
# Read by RunPod or the Hugging Face libraries, not by podenv.
PLATFORM_VARIABLES = {"RUNPOD_INIT_TIMEOUT", "HF_HUB_OFFLINE"}


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the dev environment; run `make setup`.")
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPOSITORY, timeout=300)


def body(requirements: str) -> list[str]:
    """The requirement lines, without the comment header at the top."""
    lines = requirements.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


# The image


def test_worker_requirements_are_in_sync_with_the_lock() -> None:
    exported = run(sys.executable, "-m", "uv", *EXPORT)
    assert exported.returncode == 0, exported.stderr
    requirements = (REPOSITORY / "worker" / "requirements.txt").read_text()

    assert body(requirements) == body(exported.stdout), (
        "worker/requirements.txt is out of date with uv.lock; regenerate it with the command in its header"
    )
    assert f"uv {' '.join(EXPORT)} -o worker/requirements.txt" in requirements.splitlines()[1]


def test_worker_requirements_are_podenvs_runtime_dependencies_only_and_hashed() -> None:
    requirements = (REPOSITORY / "worker" / "requirements.txt").read_text()
    names = {line.split("==")[0] for line in body(requirements) if "==" in line}

    assert {"boto3", "zstandard", "jsonschema"} <= names
    assert not names & {"torch", "snakemake", "py-rattler", "conda-pack", "pytest", "uv", "huggingface-hub"}
    pins = [line for line in body(requirements) if "==" in line]
    assert all(line.endswith("\\") for line in pins), "every pin must be followed by its hashes"


def test_the_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", "worker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_dockerfile_is_thin_and_execs_the_start_script() -> None:
    dockerfile = (REPOSITORY / "worker" / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.MULTILINE)
    assert "--require-hashes" in dockerfile and "--no-deps" in dockerfile
    assert "WORKDIR /opt/podenv" in dockerfile and "COPY worker/start.sh /opt/podenv/start.sh" in dockerfile
    assert 'ENTRYPOINT ["/opt/podenv/start.sh"]' in dockerfile
    # The handler and plugins come with the release (its code layer), never with the image.
    assert not re.search(r"^COPY worker/ ", dockerfile, re.MULTILINE)
    assert not re.search(r"torch|cuda|nvidia", dockerfile.split("FROM", 1)[1], re.IGNORECASE)


def test_the_start_script_execs_boot_then_the_handler() -> None:
    script = REPOSITORY / "worker" / "start.sh"

    assert os.access(script, os.X_OK)
    command = 'exec podenv boot --require-code --exec -- python -m worker.handler "$@"'
    assert command in script.read_text().splitlines()
    assert run("sh", "-n", str(script)).returncode == 0


def test_the_build_context_keeps_only_what_the_image_needs() -> None:
    ignore = (REPOSITORY / "worker" / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]

    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!podenv/", "!worker/start.sh"} <= set(rules)
    assert "!worker/" not in rules


# The workflows


def test_the_workflows_pass_actionlint() -> None:
    result = run(tool("actionlint"), "-no-color", "-oneline", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflows_pass_zizmor_offline_as_an_auditor() -> None:
    result = run(tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    uses = [line.strip() for path in WORKFLOWS for line in path.read_text().splitlines() if "uses:" in line]

    assert uses
    for line in uses:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line


def test_checkouts_do_not_keep_credentials() -> None:
    for path in WORKFLOWS:
        text = path.read_text()
        assert text.count("actions/checkout@") == text.count("persist-credentials: false"), path.name


def test_build_env_offers_exactly_the_envs_there_are() -> None:
    workflow = (REPOSITORY / ".github" / "workflows" / "build-env.yml").read_text()
    options = re.search(r"options: \[(.*)\]", workflow)
    envs = sorted(path.stem for path in (REPOSITORY / "envs").glob("*.yaml"))

    assert options is not None
    assert sorted(option.strip() for option in options.group(1).split(",")) == envs
    assert "build_env release publish" in workflow


# The deploy files


def _deploy_environment() -> dict[str, str]:
    """What `podenv deploy deploy/tts.yaml` puts in the worker's environment."""
    from podenv.deployfile import load_deploy_file
    from podenv.manifest import Manifest
    from podenv.runpod.deploy import worker_environment
    from podenv.runpod.sizing import sizes_for
    from tests.manifests import example_manifest

    spec = load_deploy_file(REPOSITORY / "deploy" / "tts.yaml")
    manifest = Manifest.from_document(example_manifest())
    return worker_environment(spec, manifest, sizes_for(manifest, spec["placement"], bool(spec.volumes)))


def _podenv_source() -> str:
    """podenv's and the handler's code: what reads the worker's variables."""
    files = [*(REPOSITORY / "podenv").rglob("*.py"), *(REPOSITORY / "worker").rglob("*.py")]
    return "\n".join(path.read_text() for path in files)


def test_the_deploy_variables_are_ones_podenv_reads() -> None:
    from podenv.deployfile import schema

    variables = _deploy_environment()
    allowed = schema()["properties"]["variables"]["propertyNames"]["pattern"]
    settings = re.search(r"PODENV_\(([A-Z_|]+)\)", allowed)
    assert settings is not None, allowed
    optional = {f"PODENV_{name}" for name in settings.group(1).split("|")}
    source = _podenv_source()

    for name in (set(variables) | optional | {"PODENV_OUTPUT_BUCKET"}) - PLATFORM_VARIABLES:
        assert f'"{name}"' in source, f"podenv never reads {name}"
    assert variables["PODENV_ROOT"] == DEFAULT_ROOT
    assert variables["PODENV_STORE"].startswith("s3://")
    assert variables["HF_HUB_OFFLINE"] == "1"
    assert int(variables["RUNPOD_INIT_TIMEOUT"]) > 420, "RunPod's default is 7 minutes"


def test_credentials_in_the_deploy_files_are_runpod_secret_references() -> None:
    for name, value in _deploy_environment().items():
        if name.startswith(("AWS_", "BUCKET_")):
            assert re.fullmatch(r"\{\{ RUNPOD_SECRET_[a-z0-9_]+ \}\}", value), name


# What the workflows do, beyond the linters


def _workflow(name: str) -> dict:
    import yaml

    document = yaml.safe_load((REPOSITORY / ".github" / "workflows" / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as true
    return document


def _step_index(steps: list[dict], predicate) -> int:
    return next(index for index, step in enumerate(steps) if predicate(step))


def test_build_env_checks_secrets_and_disk_before_it_installs_anything() -> None:
    steps = _workflow("build-env.yml")["jobs"]["build"]["steps"]
    preflight = _step_index(steps, lambda step: "build_preflight.py" in step.get("run", ""))
    first_install = _step_index(steps, lambda step: "setup-uv" in step.get("uses", ""))
    build = steps[_step_index(steps, lambda step: "snakemake" in step.get("run", ""))]

    assert preflight < first_install
    assert {"PODENV_STORE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(steps[preflight]["env"])
    assert '--configfile "$RUNNER_TEMP/build-config.json"' in build["run"]
    assert "--config " not in build["run"], "inputs go through the preflight's JSON, as strings"
    assert "ubuntu-latest" not in json.dumps(steps), "no step depends on the runner's label"


def test_build_env_installs_pinned_pixi_only_when_the_lock_is_missing() -> None:
    steps = _workflow("build-env.yml")["jobs"]["build"]["steps"]
    pixi = steps[_step_index(steps, lambda step: "setup-pixi" in step.get("uses", ""))]

    assert re.fullmatch(r"v\d+\.\d+\.\d+", pixi["with"]["pixi-version"])
    assert pixi["if"] == "steps.lock.outputs.missing == 'true'"
    assert pixi["with"]["run-install"] is False


def test_a_failed_rule_prints_its_log() -> None:
    import yaml

    profile = yaml.safe_load((REPOSITORY / "profiles" / "default" / "config.yaml").read_text())
    assert profile["show-failed-logs"] is True


def test_the_image_workflow_runs_by_hand_and_builds_for_amd64() -> None:
    workflow = _workflow("image.yml")
    build = next(
        step for step in workflow["jobs"]["image"]["steps"] if "build-push-action" in step.get("uses", "")
    )

    assert "workflow_dispatch" in workflow["on"]
    assert build["with"]["platforms"] == "linux/amd64"
