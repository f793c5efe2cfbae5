"""`podenv init NAME` in a copy of this repository: the new model's files, registered, and its
generated test passing as generated; the fork's own checks of envs and deploy files still hold;
a name that exists is refused before anything is written."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from podenv.cli import main

REPOSITORY = Path(__file__).parents[2]


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def fork(tmp_path: Path) -> Path:
    """The repository's files as a fork has them: tracked and untracked, nothing ignored."""
    listed = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPOSITORY)
    assert listed.returncode == 0, listed.stderr
    copy = tmp_path / "fork"
    for relative in filter(None, listed.stdout.split("\0")):
        source = REPOSITORY / relative
        if source.is_file():
            target = copy / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return copy


def podenv(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "podenv.cli", *arguments, cwd=cwd)


def test_init_scaffolds_a_model_whose_generated_test_passes(fork: Path) -> None:
    result = podenv("init", "denoise", cwd=fork)
    assert result.returncode == 0, result.stderr

    assert set(result.stdout.split()) == {
        "envs/denoise.yaml",
        "worker/models/denoise.py",
        "tests/unit/test_plugin_denoise.py",
        "deploy/denoise.yaml",
        "pixi.toml",
        "worker/models/__init__.py",
        ".github/workflows/build-env.yml",
    }
    pixi = tomllib.loads((fork / "pixi.toml").read_text())
    assert pixi["environments"]["denoise"] == {"features": ["denoise"]}
    assert "denoise" in pixi["feature"]
    assert (
        '"denoise": "worker.models.denoise:DenoisePlugin"' in (fork / "worker/models/__init__.py").read_text()
    )

    generated = _run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/unit/test_plugin_denoise.py",
        cwd=fork,
    )
    assert generated.returncode == 0, generated.stdout[-3000:]
    assert "2 passed" in generated.stdout

    # The fork's own checks of its envs, workflow choices and deploy files take the new model.
    checks = _run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/functional/test_deploy_files.py::test_build_env_offers_exactly_the_envs_there_are",
        "tests/unit/test_deploy_plan.py::test_the_repositorys_deploy_files_are_valid_and_name_envs_that_exist",
        cwd=fork,
    )
    assert checks.returncode == 0, checks.stdout[-3000:]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("tts", "envs/tts.yaml exists already: 'tts' is taken"),
        ("demo", "'demo' is reserved"),
        ("Bad-Name", "'Bad-Name' cannot name a model"),
        ("class", "'class' cannot name a model"),
    ],
)
def test_init_refuses_a_taken_or_bad_name_before_writing(fork: Path, name: str, refusal: str, capsys) -> None:
    before = {path: path.read_bytes() for path in fork.rglob("*") if path.is_file()}

    assert main(["init", name, "--root", str(fork)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podenv: error: ")
    assert refusal in lines[0]
    assert {path: path.read_bytes() for path in fork.rglob("*") if path.is_file()} == before


def test_init_refuses_a_plugin_registered_under_the_name(fork: Path, capsys) -> None:
    registry = fork / "worker/models/__init__.py"
    registry.write_text(registry.read_text().replace('    "demo":', '    "vad": "x:Y",\n    "demo":'))
    assert main(["init", "vad", "--root", str(fork)]) == 5
    assert "registers a plugin 'vad' already" in capsys.readouterr().err
    assert not (fork / "envs/vad.yaml").exists()
