"""The volume's blob cache: verified copies of store blobs (shards, shard indexes, layers).

    <volume>/blobs/<hex>                      a whole blob whose bytes hashed to <hex> when written
    <volume>/blobs/.<hex>.<host>.<pid>.<n>.partial   a blob being written by one fetcher

A blob appears in the cache only by renaming a partial file whose bytes were verified as they
passed, so a reader never sees half a blob. The cache is still untrusted (a volume can rot, or
somebody can write into it): every read-back is hashed again by its consumer, and a blob that
fails is deleted (``evict``) and fetched from the store.

The ways in:

* ``BlobCache.tee(digest, chunks)``: wrap a store stream that someone else verifies as it
  consumes it (the extractor does); ``commit()`` it once verified. Nothing is read twice.
* ``BlobCache.fetch_shared(...)``: fetch one blob into the cache, verified, for callers that
  want it on the volume before they read it back (an old-format env with placement=local, a
  layer's shard index), when many workers may want it at once: the first takes ``<leases>/<hex>.blob.lease``
  (gc protects the digest while it is live), fetches, fsyncs and renames; the others wait for
  the name, so each blob is downloaded once.
* ``BlobCache.fetching(...)``: that lease and wait alone, around a caller's own fetch: the
  process pool's, which tees each shard into the cache as it extracts it. Layer leases alone
  would not do: with placement=local each worker holds its env layer's lease on its own disk,
  and two envs (or two releases) share shards but not layers.

All are safe with concurrent writers: each writes its own partial file; the same digest
renamed twice leaves the same bytes.
"""

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podenv.digests import digest_hex, format_digest
from podenv.errors import BootError, IntegrityError
from podenv.fileio import read_file_chunks
from podenv.volume import VISIBILITY_GRACE, Lease, held

_POLL = 0.25
_FIRST_POLL = 0.01


@dataclass(frozen=True)
class BlobCache:
    directory: Path

    def path(self, digest: str) -> Path:
        return self.directory / digest_hex(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        """Whether a blob of that digest (and ``size``, when given) is in the cache; not verified."""
        try:
            found = self.path(digest).stat().st_size
        except FileNotFoundError:
            return False
        return size is None or found == size

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The cached blob's bytes, for a consumer that hashes them."""
        return read_file_chunks(self.path(digest))

    def evict(self, digest: str) -> None:
        """Remove a blob that failed verification (renamed aside first: one winner, and no
        reader opens a half-deleted name)."""
        path = self.path(digest)
        aside = path.with_name(f".{path.name}.bad.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)

    def _appears(self, digest: str, size: int, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while not self.has(digest, size):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def fetch_shared(
        self, store: Any, digest: str, size: int, leases: Path, timeouts: tuple[float, float], label: str
    ) -> tuple[Path, int]:
        """The blob's path, and the bytes this call fetched (0 when cached or another worker
        fetched it). ``timeouts``: (lease timeout, how long to wait for another worker)."""
        with self.fetching(digest, size, leases, timeouts, label) as mine:
            if mine:
                self._fetch_durable(store, digest, size, label)
        return self.path(digest), size if mine else 0

    @contextmanager
    def fetching(
        self,
        digest: str,
        size: int,
        leases: Path,
        timeouts: tuple[float, float],
        label: str,
        check: Callable[[], None] = lambda: None,
    ) -> Iterator[bool]:
        """Whether this caller is the one to fetch the blob: True while it holds the blob's lease
        (``<leases>/<hex>.blob.lease``, which gc respects) and no worker has cached it; False
        once the blob is in the cache, perhaps after waiting for the worker that held the
        lease. ``timeouts``: (lease timeout, how long to wait for that worker); ``check`` runs
        between looks and raises to give up the wait."""
        if self.has(digest, size):
            yield False
            return
        lease_timeout, wait_timeout = timeouts
        self.directory.mkdir(parents=True, exist_ok=True)
        lease = Lease(leases / f"{digest_hex(digest)}.blob.lease", lease_timeout, min(2.0, lease_timeout / 3))
        deadline = time.monotonic() + wait_timeout
        pause, waited = _FIRST_POLL, False
        while not lease.try_take():
            waited = True
            if self.has(digest, size):
                yield False
                return
            if time.monotonic() > deadline:
                raise BootError(
                    f"gave up after {wait_timeout:.0f}s waiting for another worker to cache {label}",
                    fix="check the other workers' boot reports, or raise the lease timeout.",
                )
            check()
            time.sleep(pause)
            # A shard takes a fraction of a second: look again soon, then less often.
            pause = min(2 * pause, _POLL)
        with held(lease):
            yield not self._appears(digest, size, VISIBILITY_GRACE if waited else 0.0)

    def _fetch_durable(self, store: Any, digest: str, size: int, label: str) -> None:
        from podenv.progress import Progress

        partial = self._partial(digest)
        hasher = hashlib.sha256()
        try:
            with open(partial, "wb") as sink:
                for chunk in store.read_blob(
                    digest, Progress(f"fetch {label}", total=size), expected_size=size
                ):
                    hasher.update(chunk)
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
            found = format_digest(hasher.hexdigest())
            if found != digest:
                raise IntegrityError(
                    f"the store's blob of {label} hashes to {found}, not {digest}; it was not cached",
                    fix="publish the release again: the store's copy is damaged.",
                )
            os.rename(partial, self.path(digest))
        finally:
            partial.unlink(missing_ok=True)

    def _partial(self, digest: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f".{digest_hex(digest)}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        return self.directory / name

    def tee(self, digest: str, chunks: Iterable[bytes]) -> "Tee":
        return Tee(self, digest, chunks)


class Tee:
    """Chunks passed through, and written to a partial file of the cache on the way."""

    def __init__(self, cache: BlobCache, digest: str, chunks: Iterable[bytes]) -> None:
        self._cache = cache
        self._digest = digest
        self._chunks = chunks
        self._partial = cache._partial(digest)
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        with open(self._partial, "wb") as sink:
            for chunk in self._chunks:
                sink.write(chunk)
                self.size += len(chunk)
                yield chunk

    def commit(self) -> None:
        """Call once the consumer verified every byte: the blob becomes visible, whole."""
        self._partial.replace(self._cache.path(self._digest))

    def discard(self) -> None:
        self._partial.unlink(missing_ok=True)
