"""The artifact store: content-addressed blobs, immutable releases, mutable channel pointers.

    blobs/sha256/<hex>                  layers, written once
    releases/<name>/<version>.json      release manifests, written once
    channels/<name>/<channel>.json      pointers, replaced only by compare-and-swap
    channels/<name>/<channel>.history/<sequence>.json   each move of a pointer, written once

The same code runs over a local directory and over S3; only ``ObjectBackend`` differs.
"""

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from podenv.digests import digest_bytes, digest_file, digest_hex
from podenv.errors import AlreadyExistsError, ConflictError, IntegrityError, NotFoundError
from podenv.names import check_name
from podenv.progress import Progress
from podenv.store.backend import ObjectBackend, PreconditionFailed


@dataclass(frozen=True)
class BlobUpload:
    digest: str
    size: int
    uploaded: bool


@dataclass(frozen=True)
class Versioned:
    """An object's bytes with the version tag a compare-and-swap must name."""

    data: bytes
    version_tag: str


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def release_key(name: str, version: str) -> str:
    return f"releases/{check_name('env name', name)}/{check_name('version', version)}.json"


def channel_key(name: str, channel: str) -> str:
    return f"{_channels_prefix(name)}{check_name('channel', channel)}.json"


def _channels_prefix(name: str) -> str:
    return f"channels/{check_name('env name', name)}/"


def _history_prefix(name: str, channel: str) -> str:
    return channel_key(name, channel).removesuffix(".json") + ".history/"


def history_key(name: str, channel: str, sequence: int) -> str:
    return f"{_history_prefix(name, channel)}{sequence:010d}.json"


class Store:
    def __init__(self, backend: ObjectBackend) -> None:
        self.backend = backend

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def endpoint(self) -> str | None:
        """The S3 endpoint asked for (None: AWS's default, or a file:// store)."""
        endpoint = getattr(self.backend, "endpoint", None)
        return endpoint if isinstance(endpoint, str) else None

    @property
    def deadline(self) -> float | None:
        """The monotonic instant after which this store's reads give up (a boot's install
        deadline, set when the store was opened), or None."""
        until = getattr(getattr(self.backend, "transfer", None), "until", None)
        return until if isinstance(until, float) else None

    # Blobs

    def blob_size(self, digest: str) -> int | None:
        info = self.backend.head(blob_key(digest))
        return None if info is None else info.size

    def put_blob(self, path: Path, digest: str | None = None, progress: Progress | None = None) -> BlobUpload:
        """Upload ``path`` as a blob unless the store has it; the digest is always checked."""
        actual = digest_file(path)
        if digest is not None and actual != digest:
            raise IntegrityError(
                f"{path} hashes to {actual}, not to the expected {digest}; nothing was uploaded."
            )
        size = path.stat().st_size
        if self._has_blob_of_size(actual, size):
            return BlobUpload(actual, size, uploaded=False)
        try:
            self.backend.put_file(blob_key(actual), path, progress)
        except PreconditionFailed:
            # Another publisher won the race with the same bytes (the key is their digest).
            self._has_blob_of_size(actual, size)
            return BlobUpload(actual, size, uploaded=False)
        return BlobUpload(actual, size, uploaded=True)

    def _has_blob_of_size(self, digest: str, size: int) -> bool:
        existing = self.blob_size(digest)
        if existing is not None and existing != size:
            raise IntegrityError(
                f"the store's blob {digest} is {existing} bytes but should be {size}",
                fix="the store is damaged: delete that blob and publish again.",
            )
        return existing is not None

    def read_blob(
        self, digest: str, progress: Progress | None = None, expected_size: int | None = None
    ) -> Iterator[bytes]:
        """The blob's bytes in order. Not verified here: the consumer hashes as it reads.

        With ``expected_size`` (a manifest's declared size) a blob of any other size is
        refused before a byte of it is read.
        """
        size = self.blob_size(digest)
        if size is None:
            raise NotFoundError(f"blob {digest} does not exist in {self.url}.")
        if expected_size is not None and size != expected_size:
            raise IntegrityError(
                f"the store's blob {digest} is {size} bytes but the release declares {expected_size}; "
                "it was refused before download: publish the release again."
            )
        if progress is not None and progress.total is None:
            progress.total = size
        return self.backend.iter_chunks(blob_key(digest), size, progress)

    def download_blob(self, digest: str, destination: Path, progress: Progress | None = None) -> int:
        """Download and verify a blob into ``destination`` (whole or absent); returns its size."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
        hasher, size = hashlib.sha256(), 0
        try:
            with open(temporary, "wb") as sink:
                for chunk in self.read_blob(digest, progress):
                    hasher.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest:
                raise IntegrityError(
                    f"blob {digest} from {self.url} hashes to {actual}; it was refused and deleted."
                )
            os.replace(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)
        return size

    # Immutable documents (releases)

    def put_immutable(self, key: str, data: bytes, what: str) -> bool:
        """Create ``key``; returns False if it exists with the same bytes (a re-run).

        Different bytes under an existing key are refused: published things never change.
        """
        try:
            self.backend.put_bytes(key, data, if_none_match=True)
            return True
        except PreconditionFailed:
            existing, _ = self.backend.get(key)
            if existing == data:
                return False
            raise AlreadyExistsError(
                f"{what} already exists in {self.url} with other content",
                fix="published releases are never overwritten: publish a new version.",
            ) from None

    def put_release(self, name: str, version: str, data: bytes) -> bool:
        return self.put_immutable(release_key(name, version), data, f"release {name} {version}")

    def get_release(self, name: str, version: str) -> bytes:
        try:
            data, _ = self.backend.get(release_key(name, version))
        except NotFoundError:
            raise NotFoundError(f"release {name} {version} does not exist in {self.url}.") from None
        return data

    def release_digest(self, name: str, version: str) -> str:
        return digest_bytes(self.get_release(name, version))

    def list_versions(self, name: str) -> list[str]:
        prefix = f"releases/{check_name('env name', name)}/"
        return [
            key[len(prefix) : -len(".json")]
            for key in self.backend.list_keys(prefix)
            if key.endswith(".json")
        ]

    # Channels

    def read_channel(self, name: str, channel: str) -> Versioned | None:
        try:
            data, tag = self.backend.get(channel_key(name, channel))
        except NotFoundError:
            return None
        return Versioned(data, tag)

    def write_channel(self, name: str, channel: str, data: bytes, expected: Versioned | None) -> str:
        """Replace the channel pointer only if it is still ``expected`` (None: must not exist yet)."""
        key = channel_key(name, channel)
        try:
            if expected is None:
                return self.backend.put_bytes(key, data, if_none_match=True)
            return self.backend.put_bytes(key, data, if_match=expected.version_tag)
        except PreconditionFailed:
            raise ConflictError(
                f"channel {channel} of {name} was changed by somebody else while we updated it",
                fix="look at it again and retry.",
            ) from None

    def channels(self, name: str) -> list[str]:
        """The names of ``name``'s channels that have a pointer."""
        prefix = _channels_prefix(name)
        relative = (key[len(prefix) :] for key in self.backend.list_keys(prefix))
        return [key.removesuffix(".json") for key in relative if "/" not in key and key.endswith(".json")]

    def channel_objects(self) -> list[str]:
        """Every key under channels/ (pointers and histories): a cheap read that needs the credentials."""
        return self.backend.list_keys("channels/")

    # Channel histories

    def record_move(self, name: str, channel: str, sequence: int, data: bytes) -> bool:
        """Write one move's record, create-only; False if it is recorded already."""
        try:
            self.backend.put_bytes(history_key(name, channel, sequence), data, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    def read_moves(self, name: str, channel: str) -> list[bytes]:
        """Every recorded move of the channel, in key order (oldest first)."""
        return [
            self.backend.get(key)[0] for key in sorted(self.backend.list_keys(_history_prefix(name, channel)))
        ]
