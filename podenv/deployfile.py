"""deploy/<endpoint>.yaml: what `podenv deploy` puts on RunPod, validated against
``podenv/schemas/deploy.v1.json``; errors name the file and the field.

The defaults live in the schema (``default``) and are applied here, once, so the rest of
podenv reads a complete document.
"""

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from podenv.errors import PodenvError

# An all-zero digest marks the repository's example image: fine for --dry-run, never deployed.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


class DeployFileError(PodenvError):
    """A deploy file is missing, not YAML, or fails its schema."""


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("podenv.schemas").joinpath("deploy.v1.json").read_text())


@dataclass(frozen=True)
class VolumeSpec:
    datacenter: str
    id: str | None
    size_gb: int | None


@dataclass(frozen=True)
class DeploySpec:
    path: Path
    document: dict[str, Any]

    @property
    def endpoint(self) -> str:
        return self.document["endpoint"]

    @property
    def env(self) -> str:
        return self.document["env"]

    @property
    def volumes(self) -> list[VolumeSpec]:
        return [VolumeSpec(v["datacenter"], v.get("id"), v.get("size_gb")) for v in self.document["volumes"]]

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def get(self, key: str) -> Any:
        return self.document.get(key)


def _read_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise DeployFileError("podenv deploy reads YAML: install podenv with its deploy extra.") from None
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DeployFileError(f"{path} does not exist; a deploy file is deploy/<endpoint>.yaml.") from None
    except yaml.YAMLError as error:
        raise DeployFileError(f"{path} is not valid YAML: {str(error).splitlines()[0]}.") from None


def _validate(document: Any, path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise DeployFileError(f"{path} is invalid at {error.json_path}: {error.message}.")


def _with_defaults(document: dict[str, Any]) -> dict[str, Any]:
    properties = schema()["properties"]
    complete = {key: value for key, value in document.items()}
    for key in ("queue_delay", "request_timeout", "flashboot", "placement"):
        complete.setdefault(key, properties[key]["default"])
    for key in ("gpu", "workers"):
        section = dict(complete.get(key, {}))
        for name, rule in properties[key]["properties"].items():
            if "default" in rule:
                section.setdefault(name, rule["default"])
        complete[key] = section
    for key in ("volumes",):
        complete.setdefault(key, [])
    for key in ("secrets", "variables"):
        complete.setdefault(key, {})
    return complete


def load_deploy_file(path: Path) -> DeploySpec:
    document = _read_yaml(path)
    _validate(document, path)
    complete = _with_defaults(document)
    workers = complete["workers"]
    if workers["min"] > workers["max"]:
        raise DeployFileError(
            f"{path}: workers.min ({workers['min']}) is above workers.max ({workers['max']})."
        )
    datacenters = [volume["datacenter"] for volume in complete["volumes"]]
    if len(datacenters) != len(set(datacenters)):
        raise DeployFileError(f"{path} lists a datacenter twice in volumes; one volume per datacenter.")
    return DeploySpec(path, complete)
