"""The bootstrap a release needs: the oldest podenv (the worker image's) that can boot it.

A release records it as ``bootstrap.podenv``; boot reads it before anything else in the
manifest (before the schema version, whose meaning a newer podenv may have changed), so an
image too old for a release refuses it in one sentence that says what to do, instead of a
schema error about a field it has never heard of.
"""

import re
from typing import Any

from podenv import __version__
from podenv.errors import ManifestError

# The podenv that first reads a release's `code` layer (the handler shipped in the release).
CODE_LAYER_BOOTSTRAP = "0.2.0"
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")


def version_key(version: str) -> tuple[int, int, int]:
    """``"0.2"`` -> ``(0, 2, 0)``; only plain release numbers are bootstrap versions."""
    parts = [int(part) for part in version.split(".")]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major, minor, patch


def needed_bootstrap(layers: list[dict[str, Any]]) -> str:
    """The oldest podenv that boots a release made of ``layers``."""
    return CODE_LAYER_BOOTSTRAP if any(layer.get("kind") == "code" for layer in layers) else "0.1.0"


def check_bootstrap(document: Any, running: str = __version__) -> None:
    """Refuse a release that needs a newer podenv than ``running``, in one sentence."""
    if not isinstance(document, dict) or not isinstance(document.get("bootstrap"), dict):
        return  # releases from before the field need no more than any podenv that reads them
    needed = document["bootstrap"].get("podenv")
    if not isinstance(needed, str) or not _VERSION.fullmatch(needed):
        raise ManifestError(
            "release manifest is invalid at $.bootstrap.podenv: it must be a version like 0.2.0."
        )
    if version_key(needed) > version_key(running):
        label = f"{document.get('name', '?')} {document.get('version', '?')}"
        raise ManifestError(
            f"release {label} needs podenv {needed} or newer to boot, "
            f"and this worker image has podenv {running}",
            fix=f"build the worker image (worker/Dockerfile) from podenv {needed} or newer and deploy it "
            "(podenv deploy), then boot this release.",
        )
