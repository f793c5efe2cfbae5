"""The volume's blob cache: compressed blobs, each verified before one rename makes it visible.

    <volume>/blobs/<hex>                        a complete blob whose bytes hashed to <hex>
    <volume>/blobs/.<hex>.<host>.<pid>.partial  a download in progress (never read)
    <volume>/leases/<hex>.blob.lease            who is downloading it

The first worker to need a blob takes its lease, streams it from the store through sha256
into a partial file, checks the digest, fsyncs and renames it into place; the others wait
for the name to appear. Nothing here trusts a cached blob: its reader verifies every byte
again as it reads (see `install.install_local_env`), and a blob that fails is removed with
`forget` and fetched again. The cache is keyed by digest and size only, so a layer made of
several blobs (package shards) uses it blob by blob.
"""

import hashlib
import os
import socket
import time
import uuid
from pathlib import Path

from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport
from podenv.errors import BootError, IntegrityError
from podenv.store import Store
from podenv.volume import Lease, Volume, held

_POLL = 0.25
# Another host's rename can reach this one after that host's lease is gone (network
# filesystems cache names): look for the blob this long before fetching it again.
_VISIBILITY_GRACE = 3.0


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _appears(path: Path, size: int, grace: float) -> bool:
    deadline = time.monotonic() + grace
    while not _complete(path, size):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _fetch_verified(store: Store, digest: str, size: int, path: Path, label: str, report: BootReport) -> None:
    from podenv.progress import Progress

    partial = path.with_name(
        f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}.partial"
    )
    hasher = hashlib.sha256()
    try:
        with open(partial, "wb") as sink:
            for chunk in store.read_blob(digest, Progress(f"fetch {label}", total=size), expected_size=size):
                hasher.update(chunk)
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        found = f"sha256:{hasher.hexdigest()}"
        if found != digest:
            raise IntegrityError(
                f"the store's blob of {label} hashes to {found}, not {digest}; it was not cached",
                fix="publish the release again: the store's copy is damaged.",
            )
        os.rename(partial, path)
        report.bytes_fetched += size
    finally:
        partial.unlink(missing_ok=True)


def cached_blob(
    store: Store, volume: Volume, digest: str, size: int, options: BootOptions, report: BootReport, label: str
) -> Path:
    """The blob's path in the cache, fetched and verified first if the cache lacks it."""
    path = volume.blob_path(digest)
    if _complete(path, size):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    heartbeat = min(2.0, options.lease_timeout / 3)
    lease = Lease(volume.leases / f"{path.name}.blob.lease", options.lease_timeout, heartbeat)
    deadline = time.monotonic() + options.wait_timeout
    waited = False
    while not lease.try_take():
        waited = True
        if _complete(path, size):
            return path
        if time.monotonic() > deadline:
            raise BootError(
                f"gave up after {options.wait_timeout:.0f}s waiting for another worker to cache {label}",
                fix="check the other workers' boot reports, or raise the lease timeout.",
            )
        time.sleep(_POLL)
    with held(lease):
        if not _appears(path, size, _VISIBILITY_GRACE if waited else 0.0):
            _fetch_verified(store, digest, size, path, label, report)
    return path


def forget(path: Path) -> None:
    """Remove a cached blob that failed verification (renamed aside first: one winner)."""
    aside = path.with_name(f".{path.name}.bad.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    aside.unlink(missing_ok=True)
