"""Channels and the release catalog, with the same bodies over file:// and SeaweedFS."""

import json
import threading

import pytest

from podenv import channels
from podenv.catalog import diff_releases, list_releases, load_release
from podenv.channels import history, promote, read_pointer, rollback
from podenv.errors import ConflictError, NotFoundError, PodenvError
from podenv.manifest import Manifest
from podenv.store import Store
from tests.manifests import example_manifest


def publish_release(store: Store, version: str, *, six: str = "1.17.0", env_digit: str = "3") -> Manifest:
    document = example_manifest()
    document["version"] = version
    document["created"] = f"2026-11-22T12:00:0{len(store.list_versions('tts'))}Z"
    document["layers"][0]["digest"] = "sha256:" + env_digit * 64
    document["sbom"]["pypi"] = [{"name": "six", "version": six, "sha256": None}]
    manifest = Manifest.from_document(document)
    store.put_release("tts", version, manifest.canonical_bytes())
    return manifest


def test_promote_then_rollback_to_the_previous_version(store: Store) -> None:
    publish_release(store, "1.0.0")
    publish_release(store, "1.1.0")

    promote(store, "tts", "1.0.0", "stable")
    promote(store, "tts", "1.1.0", "stable")
    back = rollback(store, "tts", "stable")

    assert back["version"] == "1.0.0"
    assert back["previous"] == {"version": "1.1.0", "digest": store.release_digest("tts", "1.1.0")}
    assert back["digest"] == store.release_digest("tts", "1.0.0")


def test_rollback_to_a_named_version_and_its_refusals(store: Store) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        publish_release(store, version)
        promote(store, "tts", version, "stable")

    assert rollback(store, "tts", "stable", "1.0.0")["version"] == "1.0.0"
    with pytest.raises(
        NotFoundError, match=r"release tts 9\.9\.9 does not exist.*rollback of stable refused"
    ):
        rollback(store, "tts", "stable", "9.9.9")
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        rollback(store, "tts", "canary")
    promote(store, "tts", "1.0.0", "fresh")
    with pytest.raises(PodenvError, match="no previous version"):
        rollback(store, "tts", "fresh")
    pointer, _ = read_pointer(store, "tts", "stable")
    assert pointer is not None and pointer["version"] == "1.0.0"


def test_promoting_a_release_that_does_not_exist_is_refused(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"release tts 3\.0\.0 does not exist"):
        promote(store, "tts", "3.0.0", "stable")
    assert read_pointer(store, "tts", "stable")[0] is None


def test_racing_promotes_have_one_winner_and_clear_conflicts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        publish_release(store, version)
    promote(store, "tts", "1.0.0", "stable")
    # A race, every time: each promoter reads the pointer, then all write, from the same read.
    # (Started together but unsynchronised, a busy machine can run them one after another,
    # and then each move is a legitimate one.)
    all_have_read = threading.Barrier(3)

    def read_then_wait(*arguments: object) -> object:
        pointer = read_pointer(*arguments)
        all_have_read.wait(timeout=60)
        return pointer

    monkeypatch.setattr(channels, "read_pointer", read_then_wait)
    outcomes: dict[str, str] = {}

    def race(version: str) -> None:
        try:
            promote(store, "tts", version, "stable")
            outcomes[version] = "won"
        except ConflictError as error:
            outcomes[version] = str(error)

    threads = [threading.Thread(target=race, args=(v,)) for v in ("2.0.0", "3.0.0", "4.0.0")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()

    winners = [version for version, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1
    assert all("changed by somebody else" in o for o in outcomes.values() if o != "won")
    pointer, _ = read_pointer(store, "tts", "stable")
    assert pointer is not None and pointer["version"] == winners[0] and pointer["sequence"] == 2
    assert [entry["to"]["version"] for entry in history(store, "tts", "stable")] == ["1.0.0", winners[0]]


def test_history_lists_every_move_and_heals_a_missing_record(store: Store) -> None:
    for version in ("1.0.0", "1.1.0"):
        publish_release(store, version)
    promote(store, "tts", "1.0.0", "stable")
    promote(store, "tts", "1.1.0", "stable")
    # A promoter that died between its swap and its record: move the pointer by hand.
    pointer, current = read_pointer(store, "tts", "stable")
    assert pointer is not None
    crashed = {**pointer, "version": "1.0.0", "digest": store.release_digest("tts", "1.0.0"),
               "previous": {"version": "1.1.0", "digest": pointer["digest"]}, "sequence": 3}  # fmt: skip
    store.write_channel("tts", "stable", json.dumps(crashed).encode(), expected=current)

    seen_before = history(store, "tts", "stable")
    promote(store, "tts", "1.1.0", "stable")
    moves = history(store, "tts", "stable")

    assert [e["sequence"] for e in seen_before] == [1, 2, 3]
    assert [(e["from"] or {}).get("version") for e in moves] == [None, "1.0.0", "1.1.0", "1.0.0"]
    assert [e["to"]["version"] for e in moves] == ["1.0.0", "1.1.0", "1.0.0", "1.1.0"]
    assert all(e["at"] and e["by"] for e in moves)


def test_release_table_names_the_channels(store: Store) -> None:
    publish_release(store, "1.0.0")
    publish_release(store, "1.1.0")
    promote(store, "tts", "1.0.0", "stable")
    promote(store, "tts", "1.1.0", "canary")

    rows = list_releases(store, "tts")

    assert [(row.version, row.channels) for row in rows] == [("1.0.0", ["stable"]), ("1.1.0", ["canary"])]
    assert rows[0].size == 1300
    assert rows[0].digest == store.release_digest("tts", "1.0.0")


def test_diff_shows_packages_and_what_a_worker_would_fetch(store: Store) -> None:
    publish_release(store, "1.0.0", six="1.16.0", env_digit="3")
    publish_release(store, "1.1.0", six="1.17.0", env_digit="5")

    old, new = load_release(store, "tts", "1.0.0"), load_release(store, "tts", "1.1.0")
    difference = diff_releases(old, new, store)

    assert difference["changed"] == {"pypi:six": {"from": "1.16.0", "to": "1.17.0"}}
    assert difference["added"] == {} and difference["removed"] == {}
    assert difference["shared_layers"] == ["f5-tts"]
    assert difference["fetched_layers"] == ["env"] and difference["fetch_bytes"] == 1000
