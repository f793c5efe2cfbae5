"""One layer onto the volume: under its lease, streamed and verified into private staging,
relocated, marked and renamed into place; or waited for, when another worker holds the lease."""

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport
from podenv.errors import BootError, IntegrityError, UnsafeArchiveError
from podenv.manifest import Layer
from podenv.store import Store
from podenv.volume import (
    MARKER,
    Lease,
    Volume,
    discard,
    held,
    layer_is_installed,
    publish_directory,
    write_marker,
)

if TYPE_CHECKING:
    from podenv.archive import ExtractResult

_POLL = 0.25
_VISIBILITY_GRACE = 3.0


def _layer_source(
    store: Store, volume: Volume, layer: Layer, keep_blobs: bool, report: BootReport
) -> tuple[Iterator[bytes], Path | None]:
    """Chunks of the layer's blob: from the volume's blob cache, or from the store."""
    from podenv.fileio import read_file_chunks
    from podenv.progress import Progress

    cached = volume.blob_path(layer.digest)
    if cached.is_file() and cached.stat().st_size == layer.size:
        report.layers[layer.name] = "blob-cache"
        return read_file_chunks(cached), None
    progress = Progress(f"fetch {layer.name}", total=layer.size)
    chunks = store.read_blob(layer.digest, progress, expected_size=layer.size)
    if not keep_blobs:
        return chunks, None
    volume.blobs.mkdir(parents=True, exist_ok=True)
    sink_path = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
    return _tee(chunks, sink_path), sink_path


def _tee(chunks: Iterable[bytes], path: Path) -> Iterator[bytes]:
    with open(path, "wb") as sink:
        for chunk in chunks:
            sink.write(chunk)
            yield chunk


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


def _extract_layer(
    store: Store, volume: Volume, layer: Layer, options: BootOptions, report: BootReport
) -> None:
    chunks, blob_partial = _layer_source(store, volume, layer, options.keep_blobs, report)
    try:
        try:
            published, result = unpack_into(volume, layer, chunks, options, report)
        except IntegrityError as error:
            if report.layers.get(layer.name) != "blob-cache":
                raise
            # A cached blob that fails its digest is removed and the layer fetched from the
            # store instead (once: the cache holds nothing for it any more).
            volume.blob_path(layer.digest).unlink(missing_ok=True)
            report.warnings.append(
                f"the volume's cached blob of layer {layer.name} was corrupt ({error.what})"
            )
            del report.layers[layer.name]
            _extract_layer(store, volume, layer, options, report)
            return
        if blob_partial is not None:  # every byte has passed the digest: keep it for others
            blob_partial.replace(volume.blob_path(layer.digest))
        if published:
            report.layers.setdefault(layer.name, "installed")
        else:
            report.layers[layer.name] = "lost-race"
        if report.layers[layer.name] != "blob-cache":
            report.bytes_fetched += result.size
        report.bytes_written += result.bytes_written
        report.files += result.files
    finally:
        if blob_partial is not None:
            blob_partial.unlink(missing_ok=True)


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
        writers=options.writers,
        limits=Limits(bytes=layer.unpacked_size, files=layer.files),
    )


def install_layer(
    store: Store, volume: Volume, layer: Layer, options: BootOptions, report: BootReport
) -> None:
    """Make one layer present: install it, or wait for the worker that holds its lease."""
    if layer_is_installed(volume, layer.digest):
        report.layers[layer.name] = "present"
        return
    # Beat well within the timeout others judge the lease by, or a live holder looks stale.
    heartbeat = min(2.0, options.lease_timeout / 3)
    lease_path = volume.leases / f"{layer.digest.removeprefix('sha256:')}.lease"
    lease = Lease(lease_path, options.lease_timeout, heartbeat)
    deadline = time.monotonic() + options.wait_timeout
    waited = False
    while not lease.try_take():
        waited = True
        if layer_is_installed(volume, layer.digest):
            report.layers[layer.name] = "waited"
            return
        if time.monotonic() > deadline:
            raise BootError(
                f"gave up after {options.wait_timeout:.0f}s waiting for another worker "
                f"to install layer {layer.name}."
            )
        time.sleep(_POLL)
    with held(lease):
        if _installed_within(volume, layer.digest, _VISIBILITY_GRACE if waited else 0.0):
            # Found complete once the holder let go: we waited for it, it was not there before.
            report.layers[layer.name] = "waited" if waited else "present"
            return
        _extract_layer(store, volume, layer, options, report)
