"""What decides where the env goes: the volume's and the local disk's small-file speed, read
speed, stat latency and free space, measured for real, and the placement they recommend.

An env is tens of thousands of small files, installed once per volume (placement=volume)
or once per worker start (placement=local), and opened and stat'ed by every import. On a
network volume each of those is a round trip; the model files are few and large and read
sequentially. So the env belongs on the local disk when the volume's metadata is much
slower than the local disk's and the local disk has room for it (ADR 0013).
"""

import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from podenv.progress import human_bytes

SMALL_FILE = 16 << 10
_FILES_PER_WRITER = {1: 200, 16: 25}
_READ_BYTES = 32 << 20
# The volume must be this many times slower per small file before the env leaves it: an
# install at every worker start is the price of local placement.
SLOWER_BY = 3.0


@dataclass(frozen=True)
class DiskFigures:
    path: Path
    creates_1: float  # small files created per second, one writer
    creates_16: float  # ... sixteen writers, each in its own directory
    read_mb_s: float  # sequential read of a file not in the page cache
    stat_ms: float  # mean os.stat of a file not stat'ed before
    free: int

    def line(self) -> str:
        return (
            f"{self.creates_1:.0f} / {self.creates_16:.0f} creates/s (1 / 16 writers), "
            f"{self.read_mb_s:.0f} MB/s read, stat {self.stat_ms:.2f} ms, {human_bytes(self.free)} free"
        )


def _create_files(directory: Path, count: int) -> None:
    directory.mkdir()
    payload = b"\0" * SMALL_FILE
    for index in range(count):
        with open(directory / f"f{index:04d}", "wb") as sink:
            sink.write(payload)


def _creates_per_second(scratch: Path, writers: int) -> float:
    count = _FILES_PER_WRITER[writers]
    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(lambda index: _create_files(scratch / f"w{writers}-{index}", count), range(writers)))
    return writers * count / (time.perf_counter() - started)


def _stat_ms(directory: Path) -> float:
    names = sorted(os.listdir(directory))
    started = time.perf_counter()
    for name in names:
        os.stat(directory / name)
    return (time.perf_counter() - started) * 1000 / len(names)


def _read_mb_s(scratch: Path) -> float:
    path = scratch / "sequential"
    block = os.urandom(1 << 20)
    with open(path, "wb") as sink:
        for _ in range(_READ_BYTES >> 20):
            sink.write(block)
        sink.flush()
        os.fsync(sink.fileno())
        # Out of the page cache, so the read below goes to the disk (or the network).
        os.posix_fadvise(sink.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as source:
        while source.read(1 << 20):
            pass
    return _READ_BYTES / 1e6 / (time.perf_counter() - started)


def measure(directory: Path) -> DiskFigures:
    """Measure in a private scratch directory under ``directory``, removed afterwards."""
    scratch = directory / f".podenv-placement.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        creates_1 = _creates_per_second(scratch, 1)
        creates_16 = _creates_per_second(scratch, 16)
        stat_ms = _stat_ms(scratch / "w1-0")
        read = _read_mb_s(scratch)
        filesystem = os.statvfs(directory)
        return DiskFigures(
            directory, creates_1, creates_16, read, stat_ms, filesystem.f_bavail * filesystem.f_frsize
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Recommendation:
    placement: str
    why: str


def recommend(
    volume: DiskFigures, local: DiskFigures | None, env_bytes: int | None, margin: int
) -> Recommendation:
    """The placement these figures call for, and why, in one sentence."""
    if local is None:
        return Recommendation(
            "volume", "the local root cannot be written, so the env can only live on the volume"
        )
    if env_bytes is not None and local.free < env_bytes + margin:
        return Recommendation(
            "volume",
            f"the local disk has {human_bytes(local.free)} free but the env needs {human_bytes(env_bytes)} "
            f"(+{human_bytes(margin)} margin): give the worker a larger container disk to run it locally",
        )
    per_file_volume = 1 / max(volume.creates_16, 1e-9)
    per_file_local = 1 / max(local.creates_16, 1e-9)
    slower = max(per_file_volume / per_file_local, volume.stat_ms / max(local.stat_ms, 1e-6))
    if slower >= SLOWER_BY:
        return Recommendation(
            "local",
            f"small files are {slower:.0f}x slower on the volume (stat {volume.stat_ms:.2f} ms vs "
            f"{local.stat_ms:.2f} ms): every import of the env would pay that, while installing it "
            "locally at each start reads a few large blobs",
        )
    return Recommendation(
        "volume",
        f"small files are only {slower:.1f}x slower on the volume (under {SLOWER_BY:g}x): "
        "the env can stay there and workers start without an install",
    )
