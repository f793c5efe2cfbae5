"""The store read path under a flaky network: a fault-injecting TCP proxy between podenv and
a real SeaweedFS. Drops are retried from the last good byte; what cannot be survived ends
in a StoreError that says what the network did, within the deadline."""

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from devkit.faultproxy import Fault, FaultProxy
from devkit.seaweed import SeaweedServer
from podenv.errors import StoreError
from podenv.store import Store, TransferConfig, open_store
from tests.integration.boot_support import (
    LayerSource,
    boot_argv,
    clean_environment,
    lease_files,
    listing,
    publish_release,
    run,
)

BLOB_SIZE = 6 << 20
# Short waits for the stall and trickle cases; generous ones where a busy test machine must
# not be mistaken for a stall.
RELAXED = TransferConfig(
    range_size=2 << 20, concurrency=2, attempts=3, read_timeout=10, min_rate=1, deadline=60
)
FAST = TransferConfig(
    range_size=2 << 20, concurrency=2, attempts=3, read_timeout=1.0, min_rate=256 << 10, deadline=20
)


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy(urlparse(seaweed.endpoint).port or 0) as running:
        yield running


@pytest.fixture
def blob(s3_environment: dict[str, str], seaweed: SeaweedServer, tmp_path: Path) -> tuple[str, str, bytes]:
    """(store URL, digest, bytes) of one random blob, uploaded directly (not through the proxy)."""
    url = f"s3://{seaweed.bucket}/faults-{os.urandom(6).hex()}"
    data = os.urandom(BLOB_SIZE)
    path = tmp_path / "blob"
    path.write_bytes(data)
    upload = open_store(url).put_blob(path)
    return url, upload.digest, data


def _through(proxy: FaultProxy, url: str, transfer: TransferConfig = RELAXED) -> Store:
    return open_store(url, endpoint_url=proxy.endpoint, transfer=transfer)


def _read_all(store: Store, digest: str) -> bytes:
    return b"".join(store.read_blob(digest))


def test_no_fault_passes_through(proxy: FaultProxy, blob: tuple[str, str, bytes]) -> None:
    url, digest, data = blob
    assert _read_all(_through(proxy, url), digest) == data
    assert proxy.connections >= 1 and proxy.injected == 0


def test_a_dropped_connection_is_retried_from_the_last_good_byte(
    proxy: FaultProxy, blob: tuple[str, str, bytes]
) -> None:
    url, digest, data = blob
    store = _through(proxy, url)
    proxy.set_fault(Fault("drop", after=1 << 20, times=1))

    received = _read_all(store, digest)

    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    assert proxy.injected == 1
    # Resumed, not restarted: the retry asked for the rest of its range, from the last byte
    # that arrived, not for the range again.
    step = RELAXED.range_size
    resumed = [(start, end) for start, end in proxy.ranges if start % step]
    assert len(resumed) == 1, proxy.ranges
    start, end = resumed[0]
    assert end == min(start - start % step + step, BLOB_SIZE) - 1


def test_drops_on_every_connection_end_in_a_network_error_not_corruption(
    proxy: FaultProxy, blob: tuple[str, str, bytes]
) -> None:
    url, digest, _ = blob
    store = _through(proxy, url)
    proxy.set_fault(Fault("drop", after=300 << 10, times=None))

    with pytest.raises(StoreError) as raised:
        _read_all(store, digest)

    message = str(raised.value)
    assert "dropped the connection" in message and "(3 tries)" in message
    assert "corrupt" not in message and "\n" not in message
    assert proxy.injected >= 3


@pytest.mark.parametrize("kind", ["stall", "trickle"])
def test_a_stalled_or_trickling_store_is_reported_within_the_bounds(
    kind: str, proxy: FaultProxy, blob: tuple[str, str, bytes]
) -> None:
    url, digest, _ = blob
    store = _through(proxy, url, FAST)
    proxy.set_fault(Fault(kind, after=512 << 10, times=None, trickle_bytes=1024, trickle_interval=0.05))

    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        _read_all(store, digest)
    seconds = time.monotonic() - started

    message = str(raised.value)
    expected = "stalled: no byte for 1s" if kind == "stall" else "trickled"
    assert expected in message, message
    # attempts x (the window or timeout, plus a little) plus the backoffs: far under the deadline
    assert seconds < FAST.attempts * (FAST.read_timeout + 1.5) + 2, seconds


def test_the_overall_deadline_bounds_a_slow_but_steady_store(
    proxy: FaultProxy, blob: tuple[str, str, bytes]
) -> None:
    url, digest, _ = blob
    slow = TransferConfig(
        range_size=2 << 20, concurrency=2, attempts=3, read_timeout=1.0, min_rate=1, deadline=3
    )
    store = _through(proxy, url, slow)
    proxy.set_fault(Fault("trickle", after=256 << 10, times=None, trickle_bytes=4096, trickle_interval=0.05))

    started = time.monotonic()
    with pytest.raises(StoreError, match="within the 3s deadline"):
        _read_all(store, digest)
    assert time.monotonic() - started < 3 + 2


def test_a_server_killed_mid_download_is_a_network_error(
    proxy: FaultProxy, blob: tuple[str, str, bytes]
) -> None:
    url, digest, _ = blob
    store = _through(proxy, url)
    proxy.set_fault(Fault("kill", after=1 << 20, times=1))

    with pytest.raises(StoreError) as raised:
        _read_all(store, digest)

    message = str(raised.value)
    assert "could not be connected to" in message or "dropped the connection" in message, message
    assert "corrupt" not in message


def test_one_deadline_bounds_all_of_a_boots_store_reads(
    proxy: FaultProxy, seaweed: SeaweedServer, tmp_path: Path, s3env: dict[str, str]
) -> None:
    """Three layers, each well within its own blob deadline through a slow store, but not all
    three within the install's: the boot ends at the install's deadline, in one line."""
    layers = []
    for name in ("one", "two", "three"):
        tree = tmp_path / name
        tree.mkdir()
        (tree / f"{name}.bin").write_bytes(os.urandom(3 << 20))  # views share one directory
        layers.append(LayerSource(name, tree, "model", "torch-hub"))
    store = f"s3://{seaweed.bucket}/install-deadline-{os.urandom(6).hex()}"
    release = publish_release(store, "slow", "s1", layers, tmp_path / "work")
    root = tmp_path / "volume"
    # About 1.3 MB/s: a blob takes ~2.5 s (its own deadline is 60 s), the three ~7.5 s.
    proxy.set_fault(Fault("trickle", after=0, times=None, trickle_bytes=64 << 10, trickle_interval=0.05))
    settings = {
        "PODENV_STORE_ATTEMPTS": "2",
        "PODENV_STORE_READ_TIMEOUT": "5",
        "PODENV_STORE_MIN_RATE": "1",
        "PODENV_STORE_DEADLINE": "60",
        "PODENV_STORE_INSTALL_DEADLINE": "4",
    }
    environment = clean_environment({**s3env, "AWS_ENDPOINT_URL": proxy.endpoint, **settings})

    started = time.monotonic()
    result = run(boot_argv(root, "slow", release.store, ["--version", "s1"]), environment)
    seconds = time.monotonic() - started

    assert result.returncode == 11, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("fetch ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "did not deliver the blob within the install's deadline" in lines[0], lines[0]
    assert "PODENV_STORE_INSTALL_DEADLINE" in lines[0] and "corrupt" not in lines[0]
    # The deadline, plus starting Python and resolving the release, far from the 60 s per blob.
    assert seconds < 4 + 10, seconds
    assert proxy.injected >= 1
    assert lease_files(root) == [] and listing(root / "staging") == []
    assert len(listing(root / "layers")) < 3
