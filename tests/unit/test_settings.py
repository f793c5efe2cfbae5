"""Every PODENV_* variable is declared once, in podenv/settings.py, and read only through it;
the README's table of them is the module's own."""

import ast
import re
from pathlib import Path

from podenv import settings

REPOSITORY = Path(__file__).parents[2]
MENTION = re.compile(r"\bPODENV_[A-Z]+(?:_[A-Z]+)*")  # "PODENV_STORE_*" names PODENV_STORE


def _python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPOSITORY / folder).rglob("*.py"))


def test_the_readme_table_is_the_settings_modules() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    assert settings.markdown_table() in readme, "regenerate the README's table: settings.markdown_table()"


def test_every_variable_podenv_and_the_worker_mention_is_declared() -> None:
    declared = {setting.name for setting in settings.SETTINGS}
    assert len(declared) == len(settings.SETTINGS)
    mentioned = {
        name: path.relative_to(REPOSITORY)
        for path in _python_files("podenv", "worker")
        for name in MENTION.findall(path.read_text())
    }
    undeclared = {name: str(path) for name, path in mentioned.items() if name not in declared}
    assert undeclared == {}, f"declare these in podenv/settings.py: {undeclared}"


def _environ_reads(tree: ast.AST) -> list[str]:
    """String literals passed to os.environ.get / os.getenv / os.environ[...] in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function.endswith(("environ.get", "getenv")):
                found.append(str(node.args[0].value))
        subscript = isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
        if subscript and ast.unparse(node.value).endswith("environ"):
            found.append(str(node.slice.value))
    return found


def test_podenv_reads_its_variables_only_through_settings() -> None:
    readers = {
        str(path.relative_to(REPOSITORY)): reads
        for path in _python_files("podenv")
        if path.name != "settings.py"
        and (
            reads := [
                name for name in _environ_reads(ast.parse(path.read_text())) if name.startswith("PODENV_")
            ]
        )
    }
    assert readers == {}, "read PODENV_* variables with podenv.settings.<NAME>.read()"


def test_a_setting_reads_its_default_when_unset_or_empty() -> None:
    assert settings.CHANNEL.read({}) == "stable"
    assert settings.CHANNEL.read({"PODENV_CHANNEL": ""}) == "stable"
    assert settings.CHANNEL.read({"PODENV_CHANNEL": "canary"}) == "canary"
    assert settings.STORE.read({}) is None
