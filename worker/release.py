"""The release this worker serves (``PODENV_RELEASE``, written by ``podenv boot``) and where its
models lie: every model layer resolved to files under ``HF_HUB_CACHE`` / ``TORCH_HOME``.

A model that is not on disk is an error at startup. Nothing here, nor in a plugin, downloads.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.layout import CACHE_VARIABLES, HF_HUB_TARGET, hub_folder
from worker.models.base import ModelFiles


class ReleaseError(RuntimeError):
    """The worker cannot serve the release it was started with."""


@dataclass(frozen=True)
class ModelLayer:
    name: str
    plugin: str
    optional: bool
    document: dict[str, Any]
    target: str


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    digest: str
    models: tuple[ModelLayer, ...]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def plugins(self) -> dict[str, list[ModelLayer]]:
        """The models of each plugin, in release order."""
        grouped: dict[str, list[ModelLayer]] = {}
        for model in self.models:
            grouped.setdefault(model.plugin, []).append(model)
        return grouped


def read_release(path: str | None) -> Release:
    if not path:
        raise ReleaseError("PODENV_RELEASE is not set: start the worker with `podenv boot --exec -- ...`.")
    try:
        raw = Path(path).read_bytes()
        document = json.loads(raw)
    except (OSError, ValueError) as error:
        raise ReleaseError(f"cannot read the release manifest {path}: {error}.") from None
    models = []
    for layer in document.get("layers", []):
        model = layer.get("model")
        if layer.get("kind") != "model" or model is None:
            continue
        if "plugin" not in model:
            raise ReleaseError(f"model layer {layer['name']} of {path} names no plugin to load it.")
        optional = model.get("optional", False)
        models.append(ModelLayer(layer["name"], model["plugin"], optional, model, layer["target"]))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return Release(document["name"], document["version"], digest, tuple(models))


def _hub_snapshot(model: ModelLayer, hf_cache: Path) -> Path:
    folder = hub_folder(model.document["id"], model.document.get("repo_type", "model"))
    return hf_cache / folder / "snapshots" / model.document["revision"]


def resolve_model(model: ModelLayer, environ: dict[str, str] | None = None) -> ModelFiles:
    """Where ``model``'s files are on this worker, or a :class:`ReleaseError` saying what is missing."""
    environ = dict(os.environ if environ is None else environ)
    variable = CACHE_VARIABLES[model.target]
    if not environ.get(variable):
        raise ReleaseError(f"{variable} is not set: model {model.name} has no cache to load from.")
    cache = Path(environ[variable])
    if model.target == HF_HUB_TARGET:
        path = _hub_snapshot(model, cache)
    else:
        path = cache / model.document["filename"] if "filename" in model.document else cache
    if not path.exists():
        raise ReleaseError(
            f"model {model.name} ({model.document['id']}@{model.document['revision']}) is missing: "
            f"{path} does not exist. The worker never downloads models; boot the release with "
            "`podenv boot` so its model layers are on the volume."
        )
    return ModelFiles(
        name=model.name,
        id=model.document["id"],
        revision=model.document["revision"],
        target=model.target,
        path=path,
        options=dict(model.document.get("options", {})),
    )
