"""The build workflow's inputs as they reach Snakemake: the preflight (scripts/build_preflight.py)
refuses missing secrets and a small disk in one line each, and writes every input as a string,
empty ones left out; the pipeline takes that config, says in one line what is wrong with a bad
one, and prints a failed rule's log."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).parents[2]
SECRETS = {
    "PODENV_STORE": "s3://bucket/podenv",
    "AWS_ACCESS_KEY_ID": "AKIDX",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t",
}


def _preflight():
    spec = importlib.util.spec_from_file_location(
        "build_preflight", REPOSITORY / "scripts" / "build_preflight.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_preflight(tmp_path: Path, environ: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPOSITORY / "scripts" / "build_preflight.py"), *options]
    argv += ["--output", str(tmp_path / "config.json"), str(tmp_path / "big"), "/proc/podenv-cannot-be-made"]
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **environ})


def test_inputs_become_strings_and_empty_ones_are_left_out(tmp_path: Path) -> None:
    environ = {**SECRETS, "ENV_NAME": "tts", "VERSION": "2026.10", "CHANNEL": " "}
    result = run_preflight(
        tmp_path, {**environ, "GITHUB_OUTPUT": str(tmp_path / "out")}, "--required-gb", "0.001"
    )

    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["version"] == "2026.10" and config["env"] == "tts"
    assert "channel" not in config, "an empty input means: not set"
    assert config["build_dir"] == str(tmp_path / "big" / "build")
    assert (tmp_path / "out").read_text() == f"build_dir={tmp_path / 'big'}\n"
    assert "s3cr3t" not in result.stdout + result.stderr


def test_missing_secrets_are_named_in_one_line_before_anything(tmp_path: Path) -> None:
    result = run_preflight(tmp_path, {"PODENV_STORE": "s3://bucket/p", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("preflight: the GitHub environment `store` lacks the secret(s) AWS_ACCESS_KEY_ID:")
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "big").exists()


def test_too_little_disk_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_preflight(tmp_path, SECRETS, "--required-gb", "1000000")

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"preflight: {tmp_path / 'big'} has ")
    assert line.endswith("a build needs 1e+06 GB: pick a larger runner (the `runner` input).")


def test_the_build_goes_where_the_disk_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    preflight = _preflight()
    small, big = tmp_path / "root-disk", tmp_path / "mnt"
    sizes = {small: 14 * preflight.GB, big: 70 * preflight.GB}
    real = preflight.shutil.disk_usage
    monkeypatch.setattr(
        preflight.shutil, "disk_usage", lambda path: real(path)._replace(free=sizes[Path(path)])
    )

    assert preflight.pick_build_dir([small, big], required_gb=25) == (big, 70 * preflight.GB)
    with pytest.raises(preflight.Refusal, match=r"has 14.0 GB free, the most of 1 candidate\(s\)"):
        preflight.pick_build_dir([small], required_gb=25)


# The pipeline's side


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The pipeline's own files in a directory of their own, without a pixi.lock."""
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
            "Snakefile",
            "rules",
            "config",
            "profiles",
            "envs",
            "pixi.toml",
            "podenv",
            "worker",  # the release's code layer (ADR 0014)
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    )
    for relative in filter(None, listed.stdout.split("\0")):
        target = tmp_path / "project" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPOSITORY / relative).read_bytes())
    return tmp_path / "project"


def snakemake(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", *arguments],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": path, "HOME": str(project)},
    )


def test_the_preflights_config_plans_a_build(project: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"env": "tts", "version": "2026.10", "store": "s3://bucket/podenv"}))

    result = snakemake(project, "-n", "release", "--configfile", str(config))

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "make_release" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        (
            ["version=2026.10"],
            "podenv: error: config version=2026.1 was read as a float, and it must be text",
        ),
        (["env=Bad"], "podenv: error: config env is invalid: 'Bad' does not match"),
    ],
)
def test_a_bad_config_is_one_line(project: Path, given: list[str], refusal: str) -> None:
    result = snakemake(project, "-n", "release", "--config", *given)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert refusal in output
    assert "Failed validating" not in output, "no schema dump"


def test_empty_inputs_mean_not_set(project: Path) -> None:
    result = snakemake(project, "-n", "release", "--config", "version=", "channel=", "env=tts")
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_failed_rule_prints_its_logs_sentence(project: Path) -> None:
    result = snakemake(project, "pixi.lock")

    assert result.returncode != 0
    assert "pixi.lock is missing and pixi is not on PATH" in result.stdout + result.stderr
