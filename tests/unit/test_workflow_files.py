"""The conda env every Snakemake rule runs in (`snakemake --use-conda`) pins what pyproject pins."""

import tomllib
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).parents[2]
# The rules run *under* Snakemake: it and its plugins are not needed inside their env.
NOT_IN_RULE_ENV = "snakemake"


def _name(pin: str) -> str:
    return pin.split("==")[0].strip().lower()


def test_the_rule_envs_pins_are_pyprojects() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    expected = {
        pin
        for pin in project["dependencies"] + project["optional-dependencies"]["build"]
        if not _name(pin).startswith(NOT_IN_RULE_ENV)
    }
    env = yaml.safe_load((REPOSITORY / "rules/conda/podenv-build.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert set(pip) == expected, "make rules/conda/podenv-build.yaml's pip pins equal pyproject's"
    assert all("==" in pin for pin in pip)
    python = next(
        item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python=")
    )
    assert python == "python=" + project["requires-python"].removeprefix(">=")
