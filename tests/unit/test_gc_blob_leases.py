"""gc and the volume's blob cache: a blob under a live fetch lease (a boot caching it for its
install) is kept; a cached blob no kept release names and no boot is fetching is pruned."""

from pathlib import Path

from podenv.maintenance import gc
from podenv.volume import Lease, Volume, held

HELD = "a" * 64
UNUSED = "b" * 64


def test_gc_keeps_a_blob_under_a_live_fetch_lease_and_prunes_an_unused_one(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "volume")
    volume.blobs.mkdir(parents=True)
    volume.leases.mkdir(parents=True)
    for name in (HELD, UNUSED):
        (volume.blobs / name).write_bytes(b"x" * 10)
    # The lease name podenv.blobcache.BlobCache.fetch_shared takes while it fetches and renames a blob in.
    lease = Lease(volume.leases / f"{HELD}.blob.lease", 60.0, 20.0)
    assert lease.try_take()

    with held(lease):
        result = gc(volume, keep=0, lease_timeout=60.0)

    assert (volume.blobs / HELD).exists(), "a live boot's blob was pruned under it"
    assert not (volume.blobs / UNUSED).exists()
    assert result.freed_bytes >= 10
