"""envs/<name>.yaml: which pixi environment a worker runs, with which models.

Validated against ``podenv/schemas/env-spec.v1.json``; errors name the file and field.
"""

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from podenv.digests import digest_file
from podenv.errors import PodenvError


class EnvSpecError(PodenvError):
    """An env YAML is missing or fails its schema."""


@cache
def _schema() -> dict[str, Any]:
    return json.loads(resources.files("podenv.schemas").joinpath("env-spec.v1.json").read_text())


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    id: str
    revision: str
    target: str
    document: dict[str, Any]

    @property
    def layer_document(self) -> dict[str, Any]:
        """What the release manifest records about this model."""
        entry = {"id": self.id, "source": self.source, "revision": self.revision}
        for key in ("plugin", "optional", "options", "repo_type"):
            if key in self.document:
                entry[key] = self.document[key]
        if self.source == "url":
            entry["filename"] = self.torch_filename
        return entry

    @property
    def torch_filename(self) -> str:
        """Where a url model lies under TORCH_HOME: torch.hub's checkpoints dir unless set."""
        url = self.document["url"]
        return self.document.get("filename") or f"hub/checkpoints/{url.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class EnvSpec:
    path: Path
    name: str
    version: str
    pixi_environment: str
    platform: str
    allow_unhashed: tuple[str, ...]
    models: tuple[ModelSpec, ...] = field(default=())

    @property
    def digest(self) -> str:
        return digest_file(self.path)

    def model(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise EnvSpecError(f"{self.path} has no model named '{name}'.")


def _validate(document: Any, path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise EnvSpecError(f"{path} is invalid at {error.json_path}: {error.message}.")


def load_env_spec(path: Path) -> EnvSpec:
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EnvSpecError(f"{path} does not exist; each env needs envs/<name>.yaml.") from None
    except yaml.YAMLError as error:
        raise EnvSpecError(f"{path} is not valid YAML: {str(error).splitlines()[0]}.") from None
    _validate(document, path)
    if document["name"] != path.stem:
        raise EnvSpecError(
            f"{path} names the env '{document['name']}'; it must match the file name '{path.stem}'."
        )
    names = [model["name"] for model in document.get("models", [])]
    if len(names) != len(set(names)):
        raise EnvSpecError(f"{path} lists a model name twice; model names must be unique.")
    models = tuple(
        ModelSpec(m["name"], m["source"], m["id"], m["revision"], m["target"], m)
        for m in document.get("models", [])
    )
    return EnvSpec(
        path=path,
        name=document["name"],
        version=document["version"],
        pixi_environment=document["pixi_environment"],
        platform=document.get("platform", "linux-64"),
        allow_unhashed=tuple(document.get("allow_unhashed", [])),
        models=models,
    )
