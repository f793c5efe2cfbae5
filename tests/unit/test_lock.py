"""Reading pixi.lock files of every version pixi writes (5, 6, 7), with no network."""

import json
from pathlib import Path

import pytest
from rattler import LockFile

from podenv.lock import LockError, cuda_requirement, read_plan
from tests.reference import REFERENCE_LOCK

REFERENCE = REFERENCE_LOCK
V5 = Path(__file__).parents[1] / "data" / "pixi-v5.lock"
SDISTS = {"env-test-package", "plot-antenna", "pycosat", "pyliblzfse", "pysdl2"}


@pytest.fixture(scope="module")
def reference_lock() -> Path:
    if not REFERENCE.is_file():
        pytest.fail(f"the reference lock written by pixi is missing at {REFERENCE}")
    return REFERENCE


@pytest.fixture
def v7_lock(reference_lock: Path, tmp_path: Path) -> Path:
    """The reference lock re-written by py-rattler, which writes the newest version (7)."""
    path = tmp_path / "pixi.lock"
    LockFile.from_path(reference_lock).to_path(path)
    assert path.read_text().startswith("version: 7")
    return path


@pytest.mark.contract
def test_v6_lock_written_by_pixi(reference_lock: Path) -> None:
    plan = read_plan(reference_lock, "default", "linux-64")

    assert plan.lock_version == 6
    assert (len(plan.conda), len(plan.pypi)) == (41, 89)
    python = next(p for p in plan.conda if p.name == "python")
    assert python.version == "3.11.9" and python.build == "hb806964_0_cpython"
    assert python.url.endswith("/linux-64/python-3.11.9-hb806964_0_cpython.conda")
    assert len(python.sha256 or "") == 64
    assert all(p.sha256 for p in plan.pypi)
    assert {p.name for p in plan.pypi if p.kind == "sdist"} == SDISTS


@pytest.mark.contract
def test_v7_lock_gives_the_same_plan(reference_lock: Path, v7_lock: Path) -> None:
    v6 = read_plan(reference_lock, "default", "linux-64")
    v7 = read_plan(v7_lock, "default", "linux-64")

    assert v7.lock_version == 7
    assert (v7.conda, v7.pypi) == (v6.conda, v6.pypi)


def test_v5_lock() -> None:
    plan = read_plan(V5, "default", "linux-64")

    assert plan.lock_version == 5
    assert [p.name for p in plan.conda] == ["cuda-cupti", "cuda-version"]
    assert plan.pypi[0].sha256 == "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"
    assert plan.pypi[0].kind == "wheel"
    assert plan.cuda == "12"


@pytest.mark.contract
def test_other_platforms_of_the_same_lock(reference_lock: Path) -> None:
    plan = read_plan(reference_lock, "default", "osx-arm64")
    assert plan.platform == "osx-arm64"
    assert all(p.subdir in ("osx-arm64", "noarch") for p in plan.conda)


@pytest.mark.contract
def test_missing_environment_names_the_ones_there(reference_lock: Path) -> None:
    with pytest.raises(LockError, match=r"no environment 'tts' \(it has: default\).*run `pixi lock`"):
        read_plan(reference_lock, "tts", "linux-64")


@pytest.mark.contract
def test_missing_platform_names_the_ones_there(reference_lock: Path) -> None:
    with pytest.raises(
        LockError, match=r"no packages for linux-aarch64 \(it has: linux-64, osx-64.*pixi lock"
    ):
        read_plan(reference_lock, "default", "linux-aarch64")


def test_missing_lock_file(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="does not exist: run `pixi lock`"):
        read_plan(tmp_path / "pixi.lock", "default", "linux-64")


def test_garbage_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "pixi.lock"
    path.write_text("version: 99\nthis is: [not a lock\n")
    with pytest.raises(LockError, match="is not a pixi lock file podenv can read") as caught:
        read_plan(path, "default", "linux-64")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("virtual", "specs", "expected"),
    [
        ([], [], None),
        (["__cuda=12.4", "__glibc=2.28"], [], "12.4"),
        ([], ["__cuda >=12", "libgcc >=13", "__cuda >=11.8"], "12"),
        (["__cuda=12.0"], ["__cuda >=12.6"], "12.6"),
    ],
)
def test_cuda_requirement(virtual: list[str], specs: list[str], expected: str | None) -> None:
    assert cuda_requirement(virtual, specs) == expected


@pytest.mark.contract
def test_json_plan_marks_sdists(reference_lock: Path) -> None:
    document = json.loads(json.dumps(read_plan(reference_lock, "default", "linux-64").to_json()))
    kinds = {entry["name"]: entry["kind"] for entry in document["pypi"]}
    assert {name for name, kind in kinds.items() if kind == "sdist"} == SDISTS
    assert document["conda"][0]["url"].startswith("https://conda.anaconda.org/")
