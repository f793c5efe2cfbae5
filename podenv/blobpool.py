"""Blobs into layer staging directories by a pool of processes: every shard of every layer at once.

A boot installs its missing layers (env and models) through one pool of ``jobs`` processes,
so one bound holds for CPU and memory whatever the layers are. A process takes one blob at a
time: a shard of a package-sharded layer, or the single tar.zst of an old-format layer. It
reads it from the volume's blob cache, or fetches it from the store (ranged GETs) into the
cache as it goes; hashes, decompresses and extracts it with the archive reader's safe
extraction, all in one pass.

For a sharded layer the parent fetches the index first and makes its directories; the
processes then write files only, into the one staging directory; once every shard is in,
the parent makes the index's links (each checked to stay inside the layer); `podenv.boot.install`
then relocates the env, writes the marker and renames the layer into place. A path in two shards, a file below
a link, a link that leaves the layer, or any shard that fails stops every process; the
staging is removed: all or nothing, as for one blob.

Memory: each process holds at most ``PROCESS_MEMORY_BOUND`` (the ranged-GET window, the
decompressed queue, file contents waiting for a writer, the interpreter); a boot at most
``jobs + 1`` of them. ``tests/integration/test_shards_boot.py`` measures it.
"""

import contextlib
import ctypes
import gc
import multiprocessing
import os
import resource
import signal
import tarfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from podenv.archive import Limits, extract_shard, extract_stream
from podenv.blobcache import BlobCache
from podenv.errors import IntegrityError, NotFoundError, PodenvError, UnsafeArchiveError
from podenv.shards import INDEX_SIZE_LIMIT, ShardIndex, parse_index
from podenv.store.backend import TransferConfig

# Per process: 4 ranges of 4 MiB in flight (twice over), 32 MiB of files waiting for writers.
SHARD_TRANSFER = TransferConfig(range_size=4 << 20, concurrency=4)
SHARD_WRITERS = 4
SHARD_IN_FLIGHT = 32 << 20
PROCESS_MEMORY_BOUND = 256 << 20
# What one file costs an extraction besides its bytes (its header, its create): about as much as
# this many bytes of data on ext4 (60 us a file, 1.6 ns a byte; bench/boot.py's shards).
FILE_COST_BYTES = 32 << 10
_PR_SET_PDEATHSIG = 1


def default_jobs() -> int:
    """The CPUs this worker may use: its affinity, capped by a cgroup v2 CPU quota if any."""
    cpus = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    return max(1, cpus)


@dataclass(frozen=True)
class SharedCache:
    """A volume's blob cache as every worker on that volume shares it: a blob that joins it is
    fetched from the store under its lease in ``leases``, by one worker; the others wait
    (up to ``wait_timeout``) and read it from the cache."""

    blobs: str
    leases: str
    lease_timeout: float
    wait_timeout: float

    @property
    def timeouts(self) -> tuple[float, float]:
        return self.lease_timeout, self.wait_timeout


@dataclass(frozen=True)
class BlobTask:
    """One blob to bring into a layer's staging directory. Crosses into a pool process."""

    store_url: str
    cache: SharedCache  # blobs are read from it when there; fetched into it when ``keep``
    digest: str
    size: int
    label: str
    target: str
    index_digest: str | None  # a shard of this layer index, or None: a whole tar.zst layer
    files: int
    unpacked_size: int
    writers: int
    keep: bool  # a blob fetched from the store joins the cache (shards always; layers if asked)
    until: float | None = None  # the boot's one deadline over all its store reads (monotonic)


@dataclass(frozen=True)
class BlobResult:
    digest: str
    fetched: int
    from_cache: bool
    files: int
    bytes_written: int
    peak_rss: int
    warnings: tuple[str, ...] = ()


class CachedShardCorrupt(IntegrityError):
    """A shard read from the volume's cache failed its digest (it was removed): the layer's
    staging holds some of its files, so the whole layer is installed again."""


# In the pool processes


class Stopped(PodenvError):
    """Another blob of the install failed first; this one stopped between two chunks."""


_stop_event: Any = None


def _start_worker(parent: int, stop: Any) -> None:
    """A pool process must not outlive a boot killed with SIGKILL, writing into its staging."""
    global _stop_event
    _stop_event = stop
    # What the boot process built (boto3's models, the manifest) lives as long as this one:
    # the garbage collector need not walk it again at every collection extraction causes.
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it too


def _check_stop() -> None:
    if _stop_event is not None and _stop_event.is_set():
        raise Stopped("stopped: another blob of the install failed")


def _stoppable(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        _check_stop()
        yield chunk


@cache
def _process_store(url: str, until: float | None) -> Any:
    from dataclasses import replace

    from podenv.store import open_store

    return open_store(url, transfer=replace(SHARD_TRANSFER, until=until))


@cache
def _layer_directories(blobs: str, index_digest: str) -> frozenset[str]:
    data = BlobCache(Path(blobs)).path(index_digest).read_bytes()
    return frozenset(("", *parse_index(data, index_digest).directories))


def _extract(task: BlobTask, chunks: Any) -> Any:
    limits = Limits(bytes=task.unpacked_size, files=task.files)
    if task.index_digest is None:
        return extract_stream(
            chunks, Path(task.target), expected_digest=task.digest, label=task.label, writers=task.writers,
            limits=limits,
        )  # fmt: skip
    directories = _layer_directories(task.cache.blobs, task.index_digest)
    return extract_shard(
        chunks, Path(task.target), directories, expected_digest=task.digest, label=task.label,
        limits=limits, writers=min(task.writers, SHARD_WRITERS), in_flight=SHARD_IN_FLIGHT,
    )  # fmt: skip


class _CachedLayerCorrupt(IntegrityError):
    """An old-format layer's blob read from the volume's cache failed its digest (it was removed)."""


def run_blob_task(task: BlobTask) -> BlobResult:
    """Cache or store -> sha256 -> zstd -> safe extraction; the blob joins the cache if verified.

    A blob that joins the cache is fetched under its lease on the volume: of all the workers
    that want it at once, one fetches it and the others read it from the cache once it is
    there. A cached blob that fails its digest is removed; an old-format layer is then fetched
    from the store at once (its extraction removed its own target), a shard is reported with
    `CachedShardCorrupt` for the parent to install the layer again."""
    blobs = BlobCache(Path(task.cache.blobs))
    warnings: tuple[str, ...] = ()
    if blobs.has(task.digest, task.size):
        try:
            return _from_cache(task, blobs)
        except _CachedLayerCorrupt as error:
            warnings = (error.what,)
    if not task.keep:
        return _fetched(task, _extract(task, _store_chunks(task)), warnings)
    leases = Path(task.cache.leases)
    with blobs.fetching(task.digest, task.size, leases, task.cache.timeouts, task.label, _check_stop) as mine:
        if not mine:
            return _from_cache(task, blobs)  # another worker fetched it while this one waited
        tee = blobs.tee(task.digest, _store_chunks(task))
        try:
            result = _extract(task, tee)
            tee.commit()
        finally:
            tee.discard()
    return _fetched(task, result, warnings)


def _fetched(task: BlobTask, result: Any, warnings: tuple[str, ...] = ()) -> BlobResult:
    return BlobResult(
        task.digest, result.size, False, result.files, result.bytes_written, _peak_rss(), warnings
    )


def _store_chunks(task: BlobTask) -> Iterator[bytes]:
    store = _process_store(task.store_url, task.until)
    return _stoppable(store.read_blob(task.digest, expected_size=task.size))


def _from_cache(task: BlobTask, blobs: BlobCache) -> BlobResult:
    try:
        result = _extract(task, _stoppable(blobs.chunks(task.digest)))
    except IntegrityError as error:
        blobs.evict(task.digest)
        warning = f"the volume's cached blob of {task.label} was corrupt ({error.what}); removed it"
        if task.index_digest is not None:
            raise CachedShardCorrupt(warning) from None
        raise _CachedLayerCorrupt(warning) from None
    return BlobResult(task.digest, 0, True, result.files, result.bytes_written, _peak_rss())


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# In the boot process


@dataclass
class LayerJob:
    """One layer being installed: its staging, its index (if sharded), its blobs still out."""

    layer: Any
    staging: Path
    index: ShardIndex | None = None
    waiting: set[str] = field(default_factory=set)
    results: list[BlobResult] = field(default_factory=list)
    index_fetched: int = 0

    @property
    def target(self) -> Path:
        return self.staging / "layer"


def _died() -> PodenvError:
    return PodenvError(
        "a process installing the layers died (killed, or out of memory?); nothing was kept",
        "boot again; if it recurs, lower --jobs or give the worker more memory",
    )


class BlobPool:
    """``jobs`` processes taking blob tasks; the first failure stops them all.

    `concurrent.futures` rather than `multiprocessing.Pool`: a worker killed from outside (the
    OOM killer) breaks the executor and fails every task at once, where a `Pool` would wait for
    the lost task for ever (or deadlock on its queue lock). Stopping is cooperative: every
    process checks a shared event between chunks, so the others end within one chunk.
    """

    def __init__(self, jobs: int) -> None:
        context = multiprocessing.get_context("fork")  # a fork costs no imports; nothing to pickle
        self._stop = context.Event()
        self._executor = ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), self._stop)
        )
        self._tasks: dict[Future[BlobResult], BlobTask] = {}
        self.peak_rss = 0

    def submit(self, task: BlobTask) -> None:
        try:
            self._tasks[self._executor.submit(run_blob_task, task)] = task
        except BrokenProcessPool:
            raise _died() from None

    def results(self) -> Iterator[tuple[BlobTask, BlobResult]]:
        """Every task's result as it comes; raises the first failure."""
        for future in as_completed(self._tasks):
            try:
                result = future.result()
            except BrokenProcessPool:
                raise _died() from None
            self.peak_rss = max(self.peak_rss, result.peak_rss)
            yield self._tasks[future], result

    def stop(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def fetch_index(store: Any, cache: SharedCache, layer: Any) -> tuple[ShardIndex, int]:
    """The layer's index, verified, from the cache or the store (into the cache, under its blob
    lease); the bytes this call fetched."""
    blobs = BlobCache(Path(cache.blobs))
    fetched = 0
    if not blobs.has(layer.digest):
        size = store.blob_size(layer.digest)
        if size is None:
            raise NotFoundError(
                f"the index of layer {layer.name} ({layer.digest}) is not in {store.url}",
                fix="publish the release again: the store has lost part of it.",
            )
        if size > INDEX_SIZE_LIMIT:
            raise UnsafeArchiveError(
                f"the index of layer {layer.name} is {size} bytes, more than any env needs; refusing it."
            )
        label = f"the index of layer {layer.name}"
        _, fetched = blobs.fetch_shared(store, layer.digest, size, Path(cache.leases), cache.timeouts, label)
    try:
        return parse_index(blobs.path(layer.digest).read_bytes(), layer.digest), fetched
    except PodenvError:
        blobs.evict(layer.digest)
        raise


def make_directories(target: Path, index: ShardIndex, writers: int) -> None:
    """The index's directories, one depth at a time, each depth by ``writers`` threads (0: this
    thread, in order: on a local disk a mkdir is a few microseconds and threads only add cost).

    On a network volume every mkdir is a round trip: siblings made side by side cost one
    round trip's latency per depth instead of one per directory (ADR 0013)."""
    target.mkdir()
    if writers == 0:
        for name in index.directories:  # parents first: parse_index refuses other orders
            (target / name).mkdir()
        return
    by_depth: dict[int, list[str]] = {}
    for name in index.directories:
        by_depth.setdefault(name.count("/"), []).append(name)
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="podenv-mkdir") as pool:
        for depth in sorted(by_depth):  # every parent exists before its children are made
            list(pool.map(lambda name: (target / name).mkdir(), by_depth[depth]))


def make_links(target: Path, index: ShardIndex, label: str) -> None:
    """The index's symlinks, once every file exists; each must resolve inside the layer."""
    for name, link_target in index.symlinks:
        member = tarfile.TarInfo(name)
        member.type, member.linkname = tarfile.SYMTYPE, link_target
        try:
            tarfile.data_filter(member, str(target))
        except tarfile.FilterError as error:
            raise UnsafeArchiveError(
                f"{label}: link '{name}' leaves the layer ({error}); refusing to install."
            ) from None
        try:
            os.symlink(link_target, target / name)
        except FileExistsError:
            raise UnsafeArchiveError(
                f"{label}: link '{name}' is also a file of a shard; refusing to install."
            ) from None
    # A link checked when it was made can escape through one made after it: check them all.
    root = os.path.realpath(target)
    for name, _ in index.symlinks:
        resolved = os.path.realpath(target / name)
        if os.path.commonpath([resolved, root]) != root:
            raise UnsafeArchiveError(
                f"{label}: link '{name}' leaves the layer through another link ('{resolved}'); "
                "refusing to install."
            )


def blob_tasks(
    job: LayerJob, store_url: str, cache: SharedCache, keep: bool, writers: int, until: float | None = None
) -> list[BlobTask]:
    layer = job.layer
    label = f"layer {layer.name}"
    if job.index is None:
        return [
            BlobTask(store_url, cache, layer.digest, layer.size, label, str(job.target), None,
                     layer.files, layer.unpacked_size, writers, keep, until)
        ]  # fmt: skip
    return [
        BlobTask(store_url, cache, shard.digest, shard.size, f"{label}, shard {shard.name}",
                 str(job.target), layer.digest, shard.files, shard.unpacked_size, writers, True, until)
        for shard in job.index.shards
    ]  # fmt: skip


def run_jobs(
    jobs: list[LayerJob],
    tasks: list[BlobTask],
    processes: int,
    finish: Callable[[LayerJob], None],
) -> int:
    """Run every task in one pool; ``finish`` each layer once its last blob is in. Peak RSS."""
    by_digest: dict[str, list[LayerJob]] = {}
    for job in jobs:
        for task in tasks:
            if task.target == str(job.target):
                job.waiting.add(task.digest)
                by_digest.setdefault(task.digest, []).append(job)
    for job in jobs:
        if not job.waiting:
            finish(job)  # a layer of directories and links only
    if not tasks:
        return 0
    pool = BlobPool(min(processes, len(tasks)))
    try:
        # Costliest first, so that the last blob to finish is a cheap one. A shard of 9,600
        # small files takes as long as one of 430 MB in one file: its size alone misleads.
        for task in sorted(tasks, key=lambda task: -(task.unpacked_size + task.files * FILE_COST_BYTES)):
            pool.submit(task)
        for task, result in pool.results():
            job = next(job for job in by_digest[task.digest] if task.target == str(job.target))
            job.results.append(result)
            job.waiting.discard(task.digest)
            if not job.waiting:
                finish(job)
    except BaseException:
        pool.stop()
        raise
    pool.close()
    return pool.peak_rss
