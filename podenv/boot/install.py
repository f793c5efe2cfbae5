"""A release's missing layers onto a volume (the network volume, or the worker's own disk for
placement=local), together: each under its lease, every blob of them (the shards of a sharded
env, the tar.zst of an old-format layer) through one pool of processes (`podenv.blobpool`) into
private staging, then relocated, marked and renamed into place. Layers another worker holds are
waited for while ours install. `unpack_into` is the one-stream path placement=local uses for an
old-format env from the volume's blob cache."""

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podenv.blobpool import (
    CachedShardCorrupt,
    LayerJob,
    SharedCache,
    blob_tasks,
    default_jobs,
    fetch_index,
    make_directories,
    make_links,
    run_jobs,
)
from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport
from podenv.errors import BootError, UnsafeArchiveError
from podenv.fileio import file_writers
from podenv.manifest import Layer
from podenv.store import Store
from podenv.volume import (
    MARKER,
    VISIBILITY_GRACE,
    Lease,
    Volume,
    discard,
    held,
    layer_is_installed,
    publish_directory,
    remove_dead_leases,
    write_marker,
)

if TYPE_CHECKING:
    from podenv.archive import ExtractResult

_POLL = 0.25


def unpack_into(
    destination: Volume, layer: Layer, chunks: Iterable[bytes], options: BootOptions, report: BootReport
) -> "tuple[bool, ExtractResult]":
    """Extract ``chunks`` (verified against the layer's digest as they are read, within its
    declared bytes and files) into private staging on ``destination``, relocate an env to its
    final path there, mark it and rename it into place. (False, result): another installer won."""
    from podenv.relocate import relocate

    final = destination.layer_dir(layer.digest)
    staging = destination.new_staging(layer.digest.removeprefix("sha256:")[:16])
    target = staging / "layer"
    try:
        result = _extract_limited(chunks, target, layer, options)
        if os.path.lexists(target / MARKER):
            raise UnsafeArchiveError(
                f"layer {layer.name} holds an entry named {MARKER}, podenv's own marker; "
                "refusing to install it"
            )
        if layer.kind == "env":
            relocate(target, str(final))
        marker = {"digest": layer.digest, "name": layer.name, "files": result.files}
        marker.update(bytes=result.bytes_written, installed_at=time.time())
        write_marker(target, marker)
        clear_garbled(final, layer_is_installed(destination, layer.digest), f"layer {layer.name}", report)
        return publish_directory(target, final), result
    finally:
        getattr(chunks, "close", lambda: None)()  # stop a download still in flight
        discard(staging)


def clear_garbled(final: Path, complete: bool, what: str, report: BootReport) -> None:
    """Move aside a directory whose marker is garbled (a crash, a full disk, another program),
    so that the one just built can take its place: the volume repairs itself at the next boot."""
    if complete or not os.path.lexists(final):
        return
    discard(final)
    report.warnings.append(f"{what} on the volume had a missing or garbled marker; it was installed again")


def _extract_limited(
    chunks: Iterable[bytes], target: Path, layer: Layer, options: BootOptions
) -> "ExtractResult":
    from podenv.archive import Limits, extract_stream

    return extract_stream(
        chunks,
        target,
        expected_digest=layer.digest,
        label=f"layer {layer.name}",
        writers=file_writers(target.parent, options.writers),
        limits=Limits(bytes=layer.unpacked_size, files=layer.files),
    )


def _installed_within(volume: Volume, digest: str, grace: float) -> bool:
    """Whether the layer is installed, looking again for ``grace`` seconds. On a network
    filesystem another host's rename can reach this host after the removal of its lease
    (`weed mount`: about a second): a waiter that took a just-released lease would otherwise
    download the layer again, to lose the rename."""
    deadline = time.monotonic() + grace
    while not layer_is_installed(volume, digest):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _lease(volume: Volume, layer: Layer, options: BootOptions) -> Lease:
    # Beat well within the timeout others judge the lease by, or a live holder looks stale.
    heartbeat = min(2.0, options.lease_timeout / 3)
    path = volume.leases / f"{layer.digest.removeprefix('sha256:')}.lease"
    return Lease(path, options.lease_timeout, heartbeat)


def _shared_cache(volume: Volume, options: BootOptions) -> SharedCache:
    return SharedCache(str(volume.blobs), str(volume.leases), options.lease_timeout, options.wait_timeout)


def _prepare(store: Store, volume: Volume, layer: Layer, cache: SharedCache, writers: int) -> LayerJob:
    job = LayerJob(layer, volume.new_staging(layer.digest.removeprefix("sha256:")[:16]))
    if layer.sharded:
        try:
            job.index, job.index_fetched = fetch_index(store, cache, layer)
            make_directories(job.target, job.index, writers)
        except BaseException:
            discard(job.staging)  # not a job yet: the caller's cleanup does not know it
            raise
    return job


def _finisher(volume: Volume, report: BootReport, started: float) -> Callable[[LayerJob], None]:
    from podenv.relocate import relocate

    def finish(job: LayerJob) -> None:
        layer = job.layer
        final = volume.layer_dir(layer.digest)
        if job.index is not None:
            make_links(job.target, job.index, f"layer {layer.name}")
        if os.path.lexists(job.target / MARKER):
            raise UnsafeArchiveError(
                f"layer {layer.name} holds an entry named {MARKER}, podenv's own marker; "
                "refusing to install it"
            )
        if layer.kind == "env":
            relocate(job.target, str(final))
        files = sum(result.files for result in job.results) + (len(job.index.symlinks) if job.index else 0)
        written = sum(result.bytes_written for result in job.results)
        report.warnings.extend(warning for result in job.results for warning in result.warnings)
        marker = {"digest": layer.digest, "name": layer.name, "files": files, "bytes": written}
        marker.update(installed_at=time.time())
        write_marker(job.target, marker)
        clear_garbled(final, layer_is_installed(volume, layer.digest), f"layer {layer.name}", report)
        cached = bool(job.results) and all(result.from_cache for result in job.results)
        if not publish_directory(job.target, final):
            report.layers[layer.name] = "lost-race"
        else:
            report.layers.setdefault(layer.name, "blob-cache" if cached else "installed")
        report.bytes_fetched += job.index_fetched + sum(result.fetched for result in job.results)
        report.bytes_written += written
        report.files += files
        report.phases[f"layer:{layer.name}"] = round(time.monotonic() - started, 4)

    return finish


def _install_held(
    store: Store,
    volume: Volume,
    layers: list[Layer],
    options: BootOptions,
    report: BootReport,
    started: float,
    cache: SharedCache,
) -> None:
    """Install the layers whose leases we hold, all through one pool."""
    jobs: list[LayerJob] = []
    store_url = options.store_url or ""
    # The boot's one deadline over its store reads (prepare opened the store with it): the pool's
    # processes open their own stores, under the same instant.
    until = store.deadline
    try:
        tasks = []
        # Staging is on the volume the layers go to: one filesystem, one choice of writers.
        writers = file_writers(volume.staging, options.writers)
        for layer in layers:
            jobs.append(_prepare(store, volume, layer, cache, writers))
            # Every blob is read from the cache when there; a sharded layer's blobs join it, an
            # old-format layer's only if asked (--keep-blobs).
            tasks += blob_tasks(jobs[-1], store_url, cache, options.keep_blobs, writers, until)
        peak = run_jobs(jobs, tasks, options.jobs or default_jobs(), _finisher(volume, report, started))
        report.peak_worker_rss = max(report.peak_worker_rss, peak)
    except BaseException:
        # The pool's processes are gone; one killed while it fetched could not drop its blob lease.
        remove_dead_leases(Path(cache.leases))
        raise
    finally:
        for job in jobs:
            discard(job.staging)


def _install_with_one_retry(
    store: Store,
    volume: Volume,
    layers: list[Layer],
    options: BootOptions,
    report: BootReport,
    started: float,
    cache: SharedCache,
) -> None:
    """A shard whose cached copy was corrupt was removed from the cache: install what is still
    missing once more, that shard now from the store."""
    try:
        _install_held(store, volume, layers, options, report, started, cache)
    except CachedShardCorrupt as error:
        report.warnings.append(error.what)
        again = [layer for layer in layers if not layer_is_installed(volume, layer.digest)]
        _install_held(store, volume, again, options, report, started, cache)


def install_missing(
    store: Store,
    volume: Volume,
    layers: Sequence[Layer],
    options: BootOptions,
    report: BootReport,
    cache: Volume | None = None,
) -> None:
    """Make every layer present on ``volume``: install those whose lease we get, together; wait
    for the rest. Blobs are cached in the blob cache of ``cache`` (default: ``volume``; with
    placement=local, the network volume, while the env goes to the local disk), each fetched
    under its lease there: once, whichever workers want it.

    ``report.layers`` says per layer: present, installed, blob-cache, waited or lost-race.
    """
    pending = list(layers)
    waited: set[str] = set()
    started = time.monotonic()
    deadline = started + options.wait_timeout

    def found(layer: Layer) -> None:
        report.layers[layer.name] = "waited" if layer.name in waited else "present"
        report.phases[f"layer:{layer.name}"] = round(time.monotonic() - started, 4)

    while pending:
        mine, leases, others = [], [], []
        for layer in pending:
            if layer_is_installed(volume, layer.digest):
                found(layer)
                continue
            lease = _lease(volume, layer, options)
            if lease.try_take():
                leases.append(lease)
                mine.append(layer)
            else:
                waited.add(layer.name)
                others.append(layer)
        with contextlib.ExitStack() as stack:
            for lease in leases:
                stack.enter_context(held(lease))
            # Found complete once the holder let go: we waited for it, it was not there before.
            todo = []
            for layer in mine:
                grace = VISIBILITY_GRACE if layer.name in waited else 0.0
                if _installed_within(volume, layer.digest, grace):
                    found(layer)
                else:
                    todo.append(layer)
            if todo:
                shared = _shared_cache(cache or volume, options)
                _install_with_one_retry(store, volume, todo, options, report, started, shared)
        pending = others
        if pending and time.monotonic() > deadline:
            names = ", ".join(layer.name for layer in pending)
            raise BootError(
                f"gave up after {options.wait_timeout:.0f}s waiting for another worker "
                f"to install layer {names}."
            )
        if pending:
            time.sleep(_POLL)
