"""Channels: named, movable pointers to releases, with a complete history of their moves.

A move is one compare-and-swap of ``channels/<name>/<channel>.json`` (two racing promotes
give one winner and one ConflictError). Each pointer carries a sequence number, and each
move is also recorded as ``channels/<name>/<channel>.history/<sequence>.json``, written
create-only and derived from the pointer alone, so that a promoter that died between the
swap and the record is completed by the next one.
"""

import json
import os
import re
import socket
from typing import Any

from podenv.errors import NotFoundError, PodenvError
from podenv.manifest import canonical_json, utc_timestamp
from podenv.names import check_name
from podenv.settings import ACTOR
from podenv.store import Store, Versioned, channel_key


def _actor() -> str:
    return ACTOR.read() or f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()}"


def _record(pointer: dict[str, Any]) -> dict[str, Any]:
    """The history entry of the move that produced ``pointer``."""
    return {
        "sequence": pointer["sequence"],
        "from": pointer["previous"],
        "to": {"version": pointer["version"], "digest": pointer["digest"]},
        "at": pointer["updated_at"],
        "by": pointer["by"],
    }


def _ensure_recorded(store: Store, pointer: dict[str, Any]) -> None:
    # False: recorded already, by the mover or a later promoter.
    store.record_move(
        pointer["name"], pointer["channel"], pointer["sequence"], canonical_json(_record(pointer))
    )


def _pointer_is_valid(pointer: Any) -> bool:
    from podenv.digests import DIGEST_PATTERN
    from podenv.names import VERSION_PATTERN

    def release(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and isinstance(value.get("version"), str)
            and re.match(VERSION_PATTERN, value["version"]) is not None
            and isinstance(value.get("digest"), str)
            and DIGEST_PATTERN.match(value["digest"]) is not None
        )

    return (
        release(pointer)
        and (pointer.get("previous") is None or release(pointer["previous"]))
        and isinstance(pointer.get("sequence"), int)
        and all(isinstance(pointer.get(key), str) for key in ("name", "channel", "updated_at", "by"))
    )


def read_pointer(store: Store, name: str, channel: str) -> tuple[dict[str, Any] | None, Versioned | None]:
    """The channel's pointer (None if it does not exist), checked: the store is untrusted."""
    current = store.read_channel(name, channel)
    if current is None:
        return None, None
    try:
        pointer = json.loads(current.data)
    except (ValueError, RecursionError):
        pointer = None
    if not _pointer_is_valid(pointer):
        raise PodenvError(
            f"channel {channel} of {name} in {store.url} is not a channel pointer",
            fix=f"delete {channel_key(name, channel)} from the store and promote again.",
        )
    return pointer, current


def promote(store: Store, name: str, version: str, channel: str) -> dict[str, Any]:
    """Point ``channel`` at ``version`` by compare-and-swap; returns the new pointer, or the
    current one unchanged if it points at that release already."""
    check_name("channel", channel)
    digest = store.release_digest(name, version)
    old, current = read_pointer(store, name, channel)
    if old is not None:
        _ensure_recorded(store, old)
        if (old["version"], old["digest"]) == (version, digest):
            # Not a move (a re-run publish): recording one would make `rollback` go nowhere.
            return old
    pointer = {
        "name": name,
        "channel": channel,
        "version": version,
        "digest": digest,
        "previous": {"version": old["version"], "digest": old["digest"]} if old else None,
        "sequence": old["sequence"] + 1 if old else 1,
        "updated_at": utc_timestamp(),
        "by": _actor(),
    }
    store.write_channel(name, channel, canonical_json(pointer), expected=current)
    _ensure_recorded(store, pointer)
    return pointer


def rollback(store: Store, name: str, channel: str, to_version: str | None = None) -> dict[str, Any]:
    """Move ``channel`` back to ``to_version``, by default to the version it pointed at before."""
    old, _ = read_pointer(store, name, channel)
    if old is None:
        raise NotFoundError(
            f"channel {channel} of {name} does not exist in {store.url}; nothing to roll back."
        )
    target = to_version or (old["previous"] or {}).get("version")
    if target is None:
        raise PodenvError(f"channel {channel} of {name} has no previous version; name one with --to.")
    try:
        store.release_digest(name, target)
    except NotFoundError:
        raise NotFoundError(
            f"release {name} {target} does not exist in {store.url}; rollback of {channel} refused."
        ) from None
    return promote(store, name, target, channel)


def history(store: Store, name: str, channel: str) -> list[dict[str, Any]]:
    """Every move of the channel, oldest first (the latest derived from the pointer if unrecorded)."""
    entries = {}
    for data in store.read_moves(name, channel):
        entry = json.loads(data)
        entries[entry["sequence"]] = entry
    pointer, _ = read_pointer(store, name, channel)
    if pointer is not None and pointer["sequence"] not in entries:
        entries[pointer["sequence"]] = _record(pointer)
    return [entries[sequence] for sequence in sorted(entries)]


def channels_of(store: Store, name: str) -> dict[str, dict[str, Any]]:
    """Every channel of ``name`` with its pointer."""
    found = {}
    for channel in store.channels(name):
        pointer, _ = read_pointer(store, name, channel)
        if pointer is not None:
            found[channel] = pointer
    return found
