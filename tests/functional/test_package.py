"""The shipped package: the wheel holds podenv and nothing else, and every podenv module
imports with only the runtime dependencies (what the worker image has) installed."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).parents[2]
UV = [sys.executable, "-m", "uv"]


def _run(argv: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **options)  # type: ignore[call-overload]
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """podenv's wheel, built as a release would (offline from uv's cache, which `make setup` fills)."""
    out = tmp_path_factory.mktemp("wheel")
    _run([*UV, "build", "--wheel", "--offline", "--out-dir", str(out), str(REPOSITORY)])
    (built,) = out.glob("podenv-*.whl")
    return built


def _source_modules() -> set[str]:
    return {str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "podenv").rglob("*.py")}


def test_the_wheel_holds_only_podenv(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"podenv", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    modules = {name for name in names if name.endswith(".py")}
    assert modules == _source_modules()
    assert not any(name.startswith(("devkit/", "tests/", "worker/", "bench/")) for name in names)
    data = {name for name in names if name.startswith("podenv/") and not name.endswith(".py")}
    assert "podenv/schemas/release-manifest.v1.json" in data


def test_every_module_imports_with_only_the_runtime_dependencies(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "runtime"
    # The runtime dependencies as uv.lock pins them (no extras: no build or dev tools),
    # offline from uv's cache, then the wheel itself.
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    sync = [*UV, "sync", "--frozen", "--offline", "--no-install-project", "--python", sys.executable]
    _run([*sync, "--project", str(REPOSITORY)], env=environment)
    python = venv / "bin" / "python"
    _run([*UV, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)])
    freeze = _run([*UV, "pip", "freeze", "--python", str(python)]).stdout.splitlines()
    installed = {line.split("==")[0].split(" @ ")[0] for line in freeze}
    assert "podenv" in installed and "boto3" in installed
    assert not installed & {"py-rattler", "snakemake", "conda-pack", "huggingface-hub", "pyyaml", "pytest"}
    script = (
        "import importlib, pkgutil, podenv\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(podenv.__path__, 'podenv.'))\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), 'modules imported')\n"
    )
    # Run outside the checkout, so the installed wheel is imported, not the source tree.
    result = _run([str(python), "-c", script], cwd=tmp_path)
    expected = len(_source_modules()) - 1  # every module and subpackage, podenv itself aside
    assert result.stdout.strip() == f"{expected} modules imported"
