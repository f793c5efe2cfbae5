"""Which release a worker runs: the one resolver `podenv boot` installs from and `podenv doctor`
checks, so that doctor's verdict is exactly boot's.

A pin wins: a version (``PODENV_VERSION``), or a digest (``PODENV_DIGEST``) searched for
among the env's published versions; else the channel's pointer (``PODENV_CHANNEL``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from podenv import settings
from podenv.errors import IntegrityError, NotFoundError, PodenvError

if TYPE_CHECKING:
    from podenv.manifest import Manifest
    from podenv.store import Store

DEFAULT_CHANNEL = settings.CHANNEL.default or "stable"


@dataclass(frozen=True)
class ReleaseOptions:
    """Which release, from which store, onto which volume, with how much room."""

    root: Path = Path(settings.ROOT.default or "")
    env: str | None = None
    store_url: str | None = None
    version: str | None = None
    digest: str | None = None
    channel: str = DEFAULT_CHANNEL
    quota: int | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.version or self.digest)


@dataclass(frozen=True)
class Target:
    """The release chosen: its version, the digest it must have (None: any), and why."""

    version: str
    digest: str | None
    how: str


def check_names(options: ReleaseOptions) -> None:
    """Names become store keys and paths on the volume: refuse any that could leave them."""
    from podenv.digests import digest_hex
    from podenv.names import check_name

    check_name("env name", options.env or "")
    check_name("channel", options.channel)
    if options.version:
        check_name("version", options.version)
    if options.digest:
        digest_hex(options.digest)


def names_are_valid(options: ReleaseOptions) -> bool:
    try:
        check_names(options)
    except PodenvError:
        return False
    return True


def version_of_digest(store: Store, env: str, digest: str) -> str:
    """The published version of ``env`` whose manifest has ``digest``."""
    from podenv.digests import digest_bytes

    for version in store.list_versions(env):
        if digest_bytes(store.get_release(env, version)) == digest:
            return version
    raise NotFoundError(
        f"no release of {env} in {store.url} has digest {digest}",
        fix=f"unset PODENV_DIGEST or pick one that `podenv releases {env}` lists.",
    )


def pinned_target(options: ReleaseOptions, store: Callable[[], Store]) -> Target | None:
    """The pinned release, if any; ``store`` is opened only to search for a digest."""
    env = options.env or ""
    if options.version:
        return Target(options.version, options.digest, "pinned")
    if options.digest:
        return Target(version_of_digest(store(), env, options.digest), options.digest, "pinned by digest")
    return None


def channel_target(options: ReleaseOptions, pointer: bytes | None) -> Target:
    """The release the channel's pointer names (``pointer``: its bytes, None if it is absent)."""
    channel, env = options.channel, options.env
    if pointer is None:
        raise NotFoundError(
            f"channel {channel} of {env} does not exist in {options.store_url}",
            fix=f"publish with --channel {channel}, `podenv promote {env} VERSION "
            f"--channel {channel}`, or pin PODENV_VERSION.",
        )
    from podenv.digests import digest_hex
    from podenv.names import check_name

    try:
        document = json.loads(pointer)
        # The pointer is untrusted: its version becomes a store key and a path on the volume.
        version, digest = check_name("version", document["version"]), document["digest"]
        digest_hex(digest)
        return Target(version, digest, f"channel {channel}")
    except (ValueError, TypeError, KeyError, RecursionError, PodenvError):
        raise PodenvError(
            f"channel {channel} of {env} in {options.store_url} is not a channel pointer",
            fix=f"move it again with `podenv promote {env} VERSION --channel {channel}`.",
        ) from None


def resolve_target(options: ReleaseOptions, store: Store, pointer: bytes | None) -> Target:
    """The pinned release, else the one the channel's ``pointer`` names."""
    return pinned_target(options, lambda: store) or channel_target(options, pointer)


def load_manifest(store: Store, env: str, target: Target) -> Manifest:
    """The target's manifest from the store, refused unless it has the digest promised."""
    from podenv.manifest import Manifest

    manifest = Manifest.from_bytes(store.get_release(env, target.version))
    if (manifest.name, manifest.version) != (env, target.version):
        raise IntegrityError(
            f"the store's release {env} {target.version} names itself {manifest.name} {manifest.version}",
            fix="publish the release again; a release's key and its content must agree.",
        )
    if target.digest is not None and manifest.digest != target.digest:
        raise IntegrityError(
            f"release {env} {target.version} ({target.how}) should have digest {target.digest}, "
            f"but the store's has {manifest.digest}",
            fix=f"pin the digest `podenv releases {env}` shows, or move the channel again.",
        )
    return manifest
