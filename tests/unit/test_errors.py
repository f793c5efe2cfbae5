"""One exit-code table (errors.py) and the README's copy of it; errors carry their fix, and
doctor prints that field, not a guess from the message's wording."""

import subprocess
import sys
from pathlib import Path

import pytest

from podenv import errors
from podenv.doctor import failed_with

REPOSITORY = Path(__file__).parents[2]


def test_the_readme_exit_code_table_is_errors_table() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    assert errors.exit_code_table() in readme, "regenerate the README's table: errors.exit_code_table()"


def test_every_exit_code_is_defined_once() -> None:
    codes = [entry.code for entry in errors.EXIT_CODES]
    assert len(codes) == len(set(codes)), codes
    assert {2, 10, 11, 12} <= set(codes)


def test_every_podenv_error_class_is_in_the_table() -> None:
    """An error class defined anywhere in podenv has a code in errors.py's table."""
    import importlib
    import pkgutil

    import podenv

    # Every module, so that each error class exists whatever ran before this test.
    for module in pkgutil.walk_packages(podenv.__path__, "podenv."):
        importlib.import_module(module.name)

    def subclasses(cls: type) -> set[type]:
        return {cls} | {sub for child in cls.__subclasses__() for sub in subclasses(child)}

    podenv_errors = {cls for cls in subclasses(errors.PodenvError) if cls.__module__.startswith("podenv")}
    table = {entry.code for entry in errors.EXIT_CODES}
    assert {cls.exit_code for cls in podenv_errors} <= table
    defined_elsewhere = {cls for cls in podenv_errors if "exit_code" in cls.__dict__} - set(errors.ERRORS)
    assert defined_elsewhere == set(), "define exit codes only in podenv/errors.py"


def test_an_error_prints_what_then_its_fix() -> None:
    error = errors.StoreError("the bucket 'b' does not exist", fix="create it first.")
    assert str(error) == "the bucket 'b' does not exist; create it first."
    assert (error.what, error.fix) == ("the bucket 'b' does not exist", "create it first.")
    assert str(errors.PodenvError("no fix here.")) == "no fix here."


def test_doctor_prints_the_errors_fix_field_not_a_split_of_its_words() -> None:
    # A sentence with "; " inside what is wrong: splitting the prose would cut it there.
    error = errors.NotFoundError("layer a; b is missing", fix="publish it again.")
    result = failed_with("release", error, "the default fix")
    assert (result.detail, result.fix) == ("layer a; b is missing", "publish it again")
    plain = failed_with("release", errors.NotFoundError("release x 1 does not exist."), "list releases")
    assert (plain.detail, plain.fix) == ("release x 1 does not exist", "list releases")


@pytest.mark.parametrize(
    ("argv", "code"), [(["boot", "--no-such-option"], 2), (["manifest", "/nonexistent"], 1)]
)
def test_the_cli_returns_the_tables_codes(argv: list[str], code: int) -> None:
    result = subprocess.run([sys.executable, "-m", "podenv.cli", *argv], capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    assert code in {entry.code for entry in errors.EXIT_CODES}
