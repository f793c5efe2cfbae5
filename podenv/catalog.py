"""Reading what a store holds: the releases of an env, one release, and how two differ."""

import json
from dataclasses import dataclass
from typing import Any

from podenv.channels import channels_of
from podenv.digests import digest_bytes
from podenv.manifest import Manifest
from podenv.store import Store


@dataclass(frozen=True)
class ReleaseRow:
    version: str
    digest: str
    created: str
    size: int
    channels: list[str]


def list_releases(store: Store, name: str) -> list[ReleaseRow]:
    """Every release of ``name``, oldest first, with the channels pointing at it."""
    pointing: dict[str, list[str]] = {}
    for channel, pointer in sorted(channels_of(store, name).items()):
        pointing.setdefault(pointer["digest"], []).append(channel)
    rows = []
    for version in store.list_versions(name):
        data = store.get_release(name, version)
        document = json.loads(data)
        digest = digest_bytes(data)
        size = sum(layer["size"] for layer in document["layers"])
        rows.append(ReleaseRow(version, digest, document["created"], size, pointing.get(digest, [])))
    return sorted(rows, key=lambda row: (row.created, row.version))


def load_release(store: Store, name: str, version: str) -> Manifest:
    return Manifest.from_bytes(store.get_release(name, version))


def _packages(manifest: Manifest) -> dict[str, str]:
    sbom = manifest.document["sbom"]
    packages = {f"conda:{p['name']}": p["version"] for p in sbom["conda"]}
    packages.update({f"pypi:{p['name']}": p["version"] for p in sbom["pypi"]})
    return packages


def diff_releases(old: Manifest, new: Manifest) -> dict[str, Any]:
    """Packages added, removed and changed; layers shared; what a worker on ``old`` fetches for ``new``."""
    before, after = _packages(old), _packages(new)
    old_layers = {layer.digest for layer in old.layers}
    fetched = [layer for layer in new.layers if layer.digest not in old_layers]
    return {
        "from": {"version": old.version, "digest": old.digest},
        "to": {"version": new.version, "digest": new.digest},
        "added": {key: after[key] for key in sorted(after.keys() - before.keys())},
        "removed": {key: before[key] for key in sorted(before.keys() - after.keys())},
        "changed": {
            key: {"from": before[key], "to": after[key]}
            for key in sorted(before.keys() & after.keys())
            if before[key] != after[key]
        },
        "shared_layers": [layer.name for layer in new.layers if layer.digest in old_layers],
        "fetched_layers": [layer.name for layer in fetched],
        "fetch_bytes": sum(layer.size for layer in fetched),
    }
