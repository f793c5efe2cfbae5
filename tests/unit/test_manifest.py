import copy
import json

import pytest

from podenv.errors import ManifestError
from podenv.manifest import Manifest, canonical_json, schema
from podenv.names import NAME_PATTERN, VERSION_PATTERN
from tests.manifests import example_manifest


def test_valid_manifest_loads_and_exposes_its_layers() -> None:
    manifest = Manifest.from_bytes(json.dumps(example_manifest(), indent=2).encode())

    assert (manifest.name, manifest.version, manifest.cuda) == ("tts", "1.0.0", "12.4")
    assert [layer.kind for layer in manifest.layers] == ["env", "model"]
    assert manifest.layers[1].target == "hf-hub"


def test_digest_is_of_the_canonical_form_whatever_the_key_order_or_spacing() -> None:
    document = example_manifest()
    reordered = dict(reversed(list(document.items())))
    pretty = json.dumps(reordered, indent=4).encode()

    first = Manifest.from_document(document)
    second = Manifest.from_bytes(pretty)

    assert first.digest == second.digest
    assert first.canonical_bytes() == canonical_json(document)
    assert b" " not in first.canonical_bytes().replace(b"build-box", b"")


def test_digest_changes_with_any_field() -> None:
    changed = example_manifest()
    changed["layers"][0]["size"] += 1
    assert Manifest.from_document(changed).digest != Manifest.from_document(example_manifest()).digest


def _set(document: dict, path: str, value: object) -> None:
    *parents, last = path.split(".")
    for part in parents:
        document = document[int(part)] if part.isdigit() else document[part]
    if value is _DELETE:
        del document[int(last) if last.isdigit() else last]
    else:
        document[int(last) if last.isdigit() else last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("name", "Bad Name", "$.name"),
        ("version", "../1", "$.version"),
        ("schema_version", 3, "$.schema_version"),
        ("schema_version", "1", "$.schema_version"),
        ("created", "yesterday", "$.created"),
        ("cuda", "twelve", "$.cuda"),
        ("layers.0.digest", "sha256:xyz", "$.layers[0].digest"),
        ("layers.0.size", -1, "$.layers[0].size"),
        ("layers.1.kind", "weights", "$.layers[1].kind"),
        ("layers.1.media_type", "application/x-tar", "$.layers[1].media_type"),
        ("layers.0.unexpected", True, "$.layers[0]"),
        ("layers.0.files", _DELETE, "$.layers[0]"),
        ("inputs.lock_digest", "abc", "$.inputs.lock_digest"),
        ("layers", [], "$.layers"),
    ],
)
def test_a_wrong_field_is_named(path: str, value: object, named: str) -> None:
    document = example_manifest()
    _set(document, path, value)

    with pytest.raises(ManifestError) as caught:
        Manifest.from_document(document)

    message = str(caught.value)
    assert message.startswith(f"release manifest is invalid at {named}:")
    assert "\n" not in message


def test_invalid_json_is_refused_in_one_sentence() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_bytes(b"{not json")


def test_schema_patterns_match_the_name_rules_used_for_store_keys() -> None:
    properties = schema()["properties"]
    assert properties["name"]["pattern"] == NAME_PATTERN
    assert properties["version"]["pattern"] == VERSION_PATTERN


def test_both_schema_versions_are_read_and_only_version_2_has_sharded_layers() -> None:
    old = example_manifest()
    assert Manifest.from_document(old).layers[0].sharded is False
    sharded = copy.deepcopy(old)
    sharded["layers"][0]["media_type"] = "application/vnd.podenv.layer.v2.shards+json"
    with pytest.raises(ManifestError, match=r"\$\.layers\[0\]\.media_type"):
        Manifest.from_document(sharded)
    sharded["schema_version"] = 2
    assert Manifest.from_document(sharded).layers[0].sharded is True
