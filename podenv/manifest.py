"""Release manifests: load, validate against the JSON Schema, dump canonically, digest.

The canonical form (sorted keys, no whitespace, UTF-8) is what the store holds, so the
sha256 of the stored bytes is the release digest a worker can be pinned to.
"""

import json
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from podenv.digests import digest_bytes
from podenv.errors import ManifestError

# Version 2 adds package-sharded layers; version 1 manifests (one tar.zst per layer) stay
# readable, because a rollback to a release published before is a promise already made.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
LAYER_MEDIA_TYPE = "application/vnd.podenv.layer.v1.tar+zstd"
SHARDED_MEDIA_TYPE = "application/vnd.podenv.layer.v2.shards+json"
_MAX_DETAIL = 160


@cache
def schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    text = resources.files("podenv.schemas").joinpath(f"release-manifest.v{version}.json").read_text()
    return json.loads(text)


def utc_timestamp(epoch: float | None = None) -> str:
    """The timestamp form manifests and channel pointers use, e.g. 2026-11-22T12:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def validate(document: Any) -> None:
    """Raise ManifestError naming the first wrong field, if ``document`` fails the schema."""
    import jsonschema  # imported here: a warm boot that trusts its own marker never needs it

    version = document.get("schema_version") if isinstance(document, dict) else None
    if version not in READABLE_VERSIONS:
        raise ManifestError(
            f"release manifest is invalid at $.schema_version: {version!r} is none of the versions "
            f"this podenv reads ({', '.join(map(str, READABLE_VERSIONS))}); a newer podenv may boot it."
        )
    validator = jsonschema.Draft202012Validator(schema(version))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    except RecursionError:
        raise ManifestError("release manifest is nested too deeply to be one.") from None
    if error is None:
        return
    detail = error.message
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    raise ManifestError(f"release manifest is invalid at {error.json_path}: {detail}.")


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str
    digest: str
    size: int
    unpacked_size: int
    files: int
    target: str
    document: dict[str, Any]

    @property
    def sharded(self) -> bool:
        return self.document["media_type"] == SHARDED_MEDIA_TYPE

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "Layer":
        fields = ("kind", "name", "digest", "size", "unpacked_size", "files", "target")
        return cls(**{name: document[name] for name in fields}, document=document)


@dataclass(frozen=True)
class Manifest:
    """A validated release manifest. ``document`` is the JSON object itself."""

    document: dict[str, Any]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "Manifest":
        from podenv.bootstrap import check_bootstrap

        check_bootstrap(document)  # first: a newer release may be of a schema this podenv lacks
        validate(document)
        return cls(document)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ManifestError(f"release manifest is not valid JSON: {error}.") from None
        except RecursionError:
            raise ManifestError("release manifest is nested too deeply to be one.") from None
        if not isinstance(document, dict):
            raise ManifestError("release manifest is not a JSON object.")
        return cls.from_document(document)

    @property
    def name(self) -> str:
        return self.document["name"]

    @property
    def version(self) -> str:
        return self.document["version"]

    @property
    def cuda(self) -> str | None:
        return self.document["cuda"]

    @property
    def layers(self) -> list[Layer]:
        return [Layer.from_document(layer) for layer in self.document["layers"]]

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.document)

    @property
    def digest(self) -> str:
        return digest_bytes(self.canonical_bytes())
