"""Reading what a store holds: the releases of an env, one release, and how two differ."""

import json
from dataclasses import dataclass
from typing import Any

from podenv.channels import channels_of
from podenv.digests import digest_bytes
from podenv.manifest import Layer, Manifest
from podenv.shards import ShardIndex, parse_index
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


def load_index(store: Store, layer: Layer) -> ShardIndex:
    """A sharded layer's index from the store, verified."""
    return parse_index(b"".join(store.read_blob(layer.digest)), layer.digest)


def _blob_sizes(store: Store, layer: Layer) -> dict[str, int]:
    """Every blob a worker needs for ``layer``, with its size."""
    if not layer.sharded:
        return {layer.digest: layer.size}
    index = load_index(store, layer)
    return {shard.digest: shard.size for shard in index.shards} | {layer.digest: len(index.canonical_bytes())}


def diff_releases(old: Manifest, new: Manifest, store: Store) -> dict[str, Any]:
    """Packages added, removed and changed; layers shared; the bytes a worker that has ``old``
    (its blobs in the volume's cache) really fetches for ``new``: the shards it lacks."""
    before, after = _packages(old), _packages(new)
    old_layers = {layer.digest for layer in old.layers}
    fetched = [layer for layer in new.layers if layer.digest not in old_layers]
    have = {digest for layer in old.layers for digest in _blob_sizes(store, layer)}
    needed: dict[str, int] = {}
    for layer in fetched:
        needed.update(_blob_sizes(store, layer))
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
        "fetch_bytes": sum(size for digest, size in needed.items() if digest not in have),
        "fetch_blobs": sum(1 for digest in needed if digest not in have),
        "new_layer_bytes": sum(layer.size for layer in fetched),
    }
