"""The store's contract, run with the same test bodies over file:// and a real S3 server."""

import hashlib
import threading
from pathlib import Path

import pytest

from podenv.digests import digest_file
from podenv.errors import AlreadyExistsError, ConflictError, IntegrityError, NotFoundError
from podenv.progress import Progress
from podenv.store import Store, blob_key, open_store
from podenv.store.backend import PreconditionFailed

MiB = 1 << 20


def _hash_chunks(chunks) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


@pytest.mark.parametrize(
    "size",
    [0, 1, MiB - 1, MiB, MiB + 1, 5 * MiB + 3, 8 * MiB, 21 * MiB + 7],
    ids=lambda size: f"{size}B",
)
def test_blob_round_trip(store: Store, random_file, tmp_path: Path, size: int) -> None:
    source = random_file(size)
    upload = store.put_blob(source)

    assert upload.uploaded
    assert upload.digest == digest_file(source)
    assert store.blob_size(upload.digest) == size
    assert b"".join(store.read_blob(upload.digest)) == source.read_bytes()
    copy = tmp_path / "copy"
    assert store.download_blob(upload.digest, copy) == size
    assert copy.read_bytes() == source.read_bytes()


def test_large_blob_with_default_transfer_settings(store_url: str, random_file) -> None:
    """A few hundred MB through the default multipart (upload) and ranged (download) paths."""
    store = open_store(store_url)
    source = random_file(300 * MiB + 12345)
    progress = Progress("upload", total=source.stat().st_size)

    upload = store.put_blob(source, progress=progress)

    assert upload.uploaded
    assert progress.done == source.stat().st_size
    assert _hash_chunks(store.read_blob(upload.digest)) == upload.digest


def test_putting_an_existing_blob_uploads_nothing(store: Store, random_file) -> None:
    source = random_file(10 * MiB)
    first = store.put_blob(source)
    progress = Progress("upload")

    second = store.put_blob(source, progress=progress)

    assert first.uploaded and not second.uploaded
    assert second.digest == first.digest
    assert progress.done == 0


def test_blob_with_wrong_expected_digest_is_refused(store: Store, random_file) -> None:
    source = random_file(1000)
    wrong = "sha256:" + "0" * 64

    with pytest.raises(IntegrityError, match="nothing was uploaded"):
        store.put_blob(source, digest=wrong)

    assert store.blob_size(digest_file(source)) is None
    assert store.blob_size(wrong) is None


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_racing_uploads_of_one_blob_store_it_once(store: Store, random_file, size: int) -> None:
    source = random_file(size)
    results = []
    start = threading.Barrier(4)

    def upload() -> None:
        start.wait()
        results.append(store.put_blob(source))

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 4
    assert sum(result.uploaded for result in results) >= 1
    assert _hash_chunks(store.read_blob(results[0].digest)) == digest_file(source)


def test_an_existing_key_never_takes_another_body(store: Store) -> None:
    key = blob_key("sha256:" + "a" * 64)
    store.backend.put_bytes(key, b"first", if_none_match=True)

    with pytest.raises(PreconditionFailed):
        store.backend.put_bytes(key, b"second", if_none_match=True)

    assert store.backend.get(key)[0] == b"first"


def test_release_is_immutable_but_an_identical_rerun_succeeds(store: Store) -> None:
    assert store.put_release("tts", "1.0.0", b'{"a":1}') is True
    assert store.put_release("tts", "1.0.0", b'{"a":1}') is False

    with pytest.raises(AlreadyExistsError, match="never overwritten"):
        store.put_release("tts", "1.0.0", b'{"a":2}')

    assert store.get_release("tts", "1.0.0") == b'{"a":1}'


def test_listing_versions(store: Store) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0-rc1"):
        store.put_release("asr", version, version.encode())
    store.put_release("tts", "9.9.9", b"other env")

    assert store.list_versions("asr") == ["1.0.0", "1.1.0", "2.0.0-rc1"]
    assert store.list_versions("none") == []


def test_missing_things_are_named(store: Store, tmp_path: Path) -> None:
    missing = "sha256:" + "b" * 64
    with pytest.raises(NotFoundError, match=missing):
        store.read_blob(missing)
    with pytest.raises(NotFoundError, match=r"release tts 0\.0\.1 does not exist"):
        store.get_release("tts", "0.0.1")
    assert store.read_channel("tts", "stable") is None
    assert not (tmp_path / "x").exists()


def test_channel_compare_and_swap(store: Store) -> None:
    store.write_channel("tts", "stable", b"v1", expected=None)
    with pytest.raises(ConflictError, match="changed by somebody else"):
        store.write_channel("tts", "stable", b"v1-again", expected=None)

    seen = store.read_channel("tts", "stable")
    assert seen is not None and seen.data == b"v1"
    store.write_channel("tts", "stable", b"v2", expected=seen)
    with pytest.raises(ConflictError):
        store.write_channel("tts", "stable", b"v3-from-stale-read", expected=seen)

    current = store.read_channel("tts", "stable")
    assert current is not None and current.data == b"v2"


def test_racing_channel_updates_have_exactly_one_winner(store: Store) -> None:
    store.write_channel("tts", "stable", b"v1", expected=None)
    seen = store.read_channel("tts", "stable")
    outcomes: dict[str, str] = {}
    start = threading.Barrier(6)

    def promote(version: str) -> None:
        start.wait()
        try:
            store.write_channel("tts", "stable", version.encode(), expected=seen)
            outcomes[version] = "won"
        except ConflictError:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=promote, args=(f"v{n}",)) for n in range(2, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [version for version, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 6
    assert len(winners) == 1
    current = store.read_channel("tts", "stable")
    assert current is not None and current.data == winners[0].encode()


def test_corrupted_blob_is_refused_on_download(store: Store, random_file, tmp_path: Path) -> None:
    source = random_file(3 * MiB)
    digest = store.put_blob(source).digest
    damaged = bytearray(source.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    _overwrite_behind_the_stores_back(store, blob_key(digest), bytes(damaged))
    destination = tmp_path / "downloaded"

    with pytest.raises(IntegrityError, match=digest):
        store.download_blob(digest, destination)

    assert not destination.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".downloaded")] == []


def _overwrite_behind_the_stores_back(store: Store, key: str, data: bytes) -> None:
    """Simulate bit rot or a tampering: replace an object without any condition."""
    backend = store.backend
    if hasattr(backend, "root"):
        (backend.root / key).write_bytes(data)
    else:
        backend._client.put_object(Bucket=backend.bucket, Key=backend._key(key), Body=data)
