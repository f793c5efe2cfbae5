"""`BlobCache.fetching`: of the workers that want one blob at once, the one holding its lease
fetches it; the others wait for it in the cache, give up when told to, or after their timeout."""

import threading
import time
from pathlib import Path

import pytest

from podenv.blobcache import BlobCache
from podenv.digests import digest_bytes
from podenv.errors import BootError
from podenv.volume import Lease

DATA = b"shard bytes\n" * 100
DIGEST = digest_bytes(DATA)


def _cache(tmp_path: Path) -> tuple[BlobCache, Path]:
    leases = tmp_path / "leases"
    leases.mkdir()
    return BlobCache(tmp_path / "blobs"), leases


def _holder(leases: Path) -> Lease:
    lease = Lease(leases / f"{DIGEST.removeprefix('sha256:')}.blob.lease", 60.0, 20.0)
    assert lease.try_take()
    return lease


def test_the_first_caller_fetches_and_a_later_one_finds_the_blob(tmp_path: Path) -> None:
    cache, leases = _cache(tmp_path)
    with cache.fetching(DIGEST, len(DATA), leases, (60.0, 5.0), "a shard") as mine:
        assert mine
        assert list(leases.iterdir()) != []  # held while it fetches
        cache.path(DIGEST).write_bytes(DATA)
    assert list(leases.iterdir()) == []
    with cache.fetching(DIGEST, len(DATA), leases, (60.0, 5.0), "a shard") as mine:
        assert not mine


def test_a_waiter_reads_the_holders_copy_once_it_is_in_the_cache(tmp_path: Path) -> None:
    cache, leases = _cache(tmp_path)
    holder = _holder(leases)

    def fetch_then_release() -> None:
        time.sleep(0.3)
        cache.directory.mkdir(parents=True, exist_ok=True)
        cache.path(DIGEST).write_bytes(DATA)
        holder.release()

    other = threading.Thread(target=fetch_then_release)
    other.start()
    with cache.fetching(DIGEST, len(DATA), leases, (60.0, 5.0), "a shard") as mine:
        found = cache.has(DIGEST, len(DATA))
    other.join()
    assert not mine and found


def test_a_waiter_stops_when_its_check_says_so(tmp_path: Path) -> None:
    cache, leases = _cache(tmp_path)
    holder = _holder(leases)

    class Stopped(Exception):
        pass

    def check() -> None:
        raise Stopped

    try:
        with pytest.raises(Stopped), cache.fetching(DIGEST, len(DATA), leases, (60.0, 5.0), "a shard", check):
            pass
    finally:
        holder.release()


def test_a_waiter_gives_up_after_its_timeout_in_one_sentence(tmp_path: Path) -> None:
    cache, leases = _cache(tmp_path)
    holder = _holder(leases)
    try:
        expected = "waiting for another worker to cache layer env, shard conda-x"
        with (
            pytest.raises(BootError, match=expected),
            cache.fetching(DIGEST, len(DATA), leases, (60.0, 0.2), "layer env, shard conda-x"),
        ):
            pass
    finally:
        holder.release()
