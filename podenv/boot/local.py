"""placement=local: the env layer onto the worker's own disk, from the volume's blob cache.

RunPod's volumes are network filesystems where every create, open and stat is a round trip:
an env of 60,000 files imports many times slower from there than from the container disk
(ADR 0013). So the env is unpacked at each worker start onto the local disk, from its blob
in the volume's cache (a few large sequential reads), verified again as it is read. A blob
that fails verification is removed from the cache and fetched again from the store; the
store also serves a blob the cache lacks (the first worker, under the blob's lease), and the
env itself when there is no network volume (no cache worth keeping: verified as it streams)."""

from podenv.blobcache import BlobCache
from podenv.boot.install import unpack_into
from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport
from podenv.errors import IntegrityError
from podenv.log import get_logger
from podenv.manifest import Layer
from podenv.store import Store
from podenv.volume import Volume, layer_is_installed

_log = get_logger("boot")


def install_local_env(
    store: Store,
    volume: Volume,
    local: Volume,
    layer: Layer,
    options: BootOptions,
    report: BootReport,
    cache: bool = True,
) -> None:
    """Make the env ``layer`` present under ``local``, from the volume's cached blob (or, with
    ``cache`` off, straight from the store)."""
    from podenv.fileio import read_file_chunks

    if layer_is_installed(local, layer.digest):
        report.layers[layer.name] = "present"
        return
    if not cache:
        _install_from_store(store, local, layer, options, report)
        return
    label = f"layer {layer.name}"
    for attempt in (1, 2):
        fetched_before = report.bytes_fetched
        blobs = BlobCache(volume.blobs)
        timeouts = (options.lease_timeout, options.wait_timeout)
        blob, fetched = blobs.fetch_shared(store, layer.digest, layer.size, volume.leases, timeouts, label)
        report.bytes_fetched += fetched
        source = "store" if report.bytes_fetched > fetched_before else "blob-cache"
        try:
            published, result = unpack_into(local, layer, read_file_chunks(blob), options, report)
        except IntegrityError as error:
            if attempt == 2:
                raise
            blobs.evict(layer.digest)
            report.warnings.append(
                f"the volume's cached blob of {label} failed verification ({error.what}); "
                "removed it, fetching it again from the store"
            )
            _log.warning(report.warnings[-1])
            continue
        report.layers[layer.name] = f"local-from-{source}" if published else "lost-race"
        report.bytes_written += result.bytes_written
        report.files += result.files
        return


def _install_from_store(
    store: Store, local: Volume, layer: Layer, options: BootOptions, report: BootReport
) -> None:
    from podenv.progress import Progress

    chunks = store.read_blob(
        layer.digest, Progress(f"fetch layer {layer.name}", total=layer.size), expected_size=layer.size
    )
    published, result = unpack_into(local, layer, chunks, options, report)
    report.bytes_fetched += layer.size
    report.layers[layer.name] = "local-from-store" if published else "lost-race"
    report.bytes_written += result.bytes_written
    report.files += result.files
