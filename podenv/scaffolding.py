"""`podenv init NAME`: a new model in a fork, in one command.

Writes envs/NAME.yaml, a [feature.NAME] and its environment in pixi.toml, the plugin
worker/models/NAME.py registered in worker/models/__init__.py, its test, a deploy file, and
NAME among the build workflow's choices. Every refusal (a name taken, a file not where a
podenv project keeps it) comes before the first write; the edited files are checked to
parse before they replace the originals.
"""

import keyword
import re
import string
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from podenv.errors import AlreadyExistsError, PodenvError

# A module name (worker/models/NAME.py) and an env name (envs/NAME.yaml) at once.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
RESERVED = {"base", "build", "default", "demo", "models", "test"}
_REGISTRY = "worker/models/__init__.py"
_WORKFLOW = ".github/workflows/build-env.yml"
_CHOICES = re.compile(r"^(\s+options: \[)([^\]]*)(\])$", re.MULTILINE)


@dataclass(frozen=True)
class Scaffold:
    root: Path
    name: str

    @property
    def class_stem(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def new_files(self) -> dict[str, str]:
        """Relative path -> template of every file init creates."""
        return {
            f"envs/{self.name}.yaml": "env.yaml.tmpl",
            f"worker/models/{self.name}.py": "plugin.py.tmpl",
            f"tests/unit/test_plugin_{self.name}.py": "test_plugin.py.tmpl",
            f"deploy/{self.name}.yaml": "deploy.yaml.tmpl",
        }

    def render(self, template: str) -> str:
        text = resources.files("podenv.scaffold").joinpath(template).read_text()
        return string.Template(text).substitute(name=self.name, Name=self.class_stem)


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise PodenvError(
            f"'{name}' cannot name a model: use a lowercase letter, then up to 40 lowercase letters, "
            "digits or '_' (it becomes a Python module and an env name)."
        )
    if name in RESERVED:
        raise AlreadyExistsError(f"'{name}' is reserved in a podenv project; choose another name.")


def _check_project(scaffold: Scaffold) -> None:
    for relative in ("pixi.toml", "envs", _REGISTRY, _WORKFLOW):
        if not scaffold.path(relative).exists():
            raise PodenvError(
                f"{scaffold.root} is not a podenv project: {relative} is missing (run init at its root)."
            )


def _check_free(scaffold: Scaffold, manifest: dict, registry: str) -> None:
    name = scaffold.name
    for relative in scaffold.new_files:
        if scaffold.path(relative).exists():
            raise AlreadyExistsError(f"{relative} exists already: '{name}' is taken; choose another name.")
    if name in manifest.get("feature", {}) or name in manifest.get("environments", {}):
        raise AlreadyExistsError(
            f"pixi.toml has a feature or environment '{name}' already; choose another name."
        )
    if re.search(rf'^\s+"{name}":', registry, re.MULTILINE):
        raise AlreadyExistsError(f"{_REGISTRY} registers a plugin '{name}' already; choose another name.")


def _pixi_with(scaffold: Scaffold, text: str) -> str:
    name = scaffold.name
    header = "\n[environments]\n"
    if header not in text:
        raise PodenvError("pixi.toml has no [environments] table to add the env to.")
    feature = scaffold.render("pixi-feature.toml.tmpl")
    before, after = text.split(header, 1)
    edited = f'{before.rstrip()}\n{feature}{header}{name} = {{ features = ["{name}"] }}\n{after}'
    parsed = tomllib.loads(edited)
    if name not in parsed["feature"] or name not in parsed["environments"]:
        raise PodenvError(f"pixi.toml did not take the feature '{name}'; add it by hand.")
    return edited


def _registry_with(scaffold: Scaffold, text: str) -> str:
    match = re.search(r"^PLUGINS = \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise PodenvError(f"{_REGISTRY} has no PLUGINS = {{...}} table to register the plugin in.")
    entry = f'    "{scaffold.name}": "worker.models.{scaffold.name}:{scaffold.class_stem}Plugin",\n'
    return text[: match.end(1)] + entry + text[match.end(1) :]


def _workflow_with(scaffold: Scaffold, text: str) -> str:
    match = _CHOICES.search(text)
    if match is None:
        raise PodenvError(f"{_WORKFLOW} has no `options: [...]` list of envs to add '{scaffold.name}' to.")
    choices = [choice.strip() for choice in match.group(2).split(",") if choice.strip()]
    listed = ", ".join(sorted({*choices, scaffold.name}))
    return text[: match.start(2)] + listed + text[match.end(2) :]


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.podenv-init")
    partial.write_text(text)
    partial.replace(path)


def init_model(root: Path, name: str) -> list[str]:
    """Scaffold model ``name`` in the project at ``root``; the relative paths written or edited."""
    _check_name(name)
    scaffold = Scaffold(root, name)
    _check_project(scaffold)
    pixi_text = scaffold.path("pixi.toml").read_text()
    registry_text = scaffold.path(_REGISTRY).read_text()
    _check_free(scaffold, tomllib.loads(pixi_text), registry_text)
    edits = {
        "pixi.toml": _pixi_with(scaffold, pixi_text),
        _REGISTRY: _registry_with(scaffold, registry_text),
        _WORKFLOW: _workflow_with(scaffold, scaffold.path(_WORKFLOW).read_text()),
    }
    files = {relative: scaffold.render(template) for relative, template in scaffold.new_files.items()}
    for relative, text in files.items():
        scaffold.path(relative).parent.mkdir(parents=True, exist_ok=True)
        _replace(scaffold.path(relative), text)
    for relative, text in edits.items():
        _replace(scaffold.path(relative), text)
    return [*files, *edits]
