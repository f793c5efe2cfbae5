"""The whole boot: resolve the release, use it warm from the volume or install it cold."""

import os
import time
from typing import Any

from podenv.boot.install import clear_garbled, install_layer
from podenv.boot.options import BootOptions
from podenv.boot.report import BootReport, ReadyRelease, reserve_report
from podenv.boot.space import check_space
from podenv.boot.views import build_view
from podenv.boot.warm import local_release, pinned_warm, warmed_manifest
from podenv.errors import BootError, StoreError
from podenv.layout import ENV_TARGET, VIEW_DIRS
from podenv.log import get_logger
from podenv.resolve import Target, channel_target, check_names, load_manifest, pinned_target
from podenv.store import Store
from podenv.volume import (
    RELEASE_MARKER,
    Volume,
    discard,
    installing,
    layer_is_installed,
    publish_directory,
    reclaim_dead,
)

_log = get_logger("boot")


def _open_store(options: BootOptions) -> Store:
    from podenv.store import open_store

    if not options.store_url:
        raise BootError(
            "no store given", fix="set PODENV_STORE (or --store) to the store the release lives in."
        )
    return open_store(options.store_url)


def _channel_target(options: BootOptions, volume: Volume, report: BootReport) -> Target:
    """The release the channel points at; from the store, or its last known value offline."""
    cache = volume.channel_cache(options.env_name, options.channel)
    try:
        pointer = _open_store(options).read_channel(options.env_name, options.channel)
    except StoreError as error:
        if not cache.exists():
            raise BootError(f"cannot resolve channel {options.channel} of {options.env}: {error}") from None
        target = channel_target(options, cache.read_bytes())
        report.warnings.append(
            f"store unreachable; channel {options.channel} last pointed at {target.version}"
        )
        _log.warning(report.warnings[-1])
        return target
    target = channel_target(options, pointer.data if pointer else None)
    assert pointer is not None  # channel_target refuses an absent pointer
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    partial.write_bytes(pointer.data)
    partial.replace(cache)  # other workers read it offline: whole or the previous one
    return target


def _install_release(options: BootOptions, volume: Volume, target: Target, report: BootReport) -> None:
    from podenv.gpu import check_driver, driver_cuda_version

    since = time.monotonic()
    store = _open_store(options)  # opening connects nowhere: a warmed volume may need no store
    manifest = warmed_manifest(volume, options.env_name, target) or load_manifest(
        store, options.env_name, target
    )
    report.version, report.digest = manifest.version, manifest.digest
    since = report.phase("resolve", since)
    check_driver(manifest.cuda, driver_cuda_version(), f"{manifest.name} {manifest.version}")
    digests = [layer.digest for layer in manifest.layers]
    with installing(volume, manifest.name, manifest.version, digests, options.lease_timeout):
        missing = [layer for layer in manifest.layers if not layer_is_installed(volume, layer.digest)]
        check_space(volume, missing, options.quota, options.keep_blobs)
        since = report.phase("preflight", since)
        for layer in manifest.layers:
            install_layer(store, volume, layer, options, report)
            since = report.phase(f"layer:{layer.name}", since)
        _publish_view(options, volume, manifest, target, report)
    report.phase("view", since)


def _publish_view(
    options: BootOptions, volume: Volume, manifest: Any, target: Target, report: BootReport
) -> None:
    staging = volume.new_staging(f"release-{options.env}-{target.version}")
    final = volume.release_dir(options.env_name, target.version)
    try:
        build_view(volume, manifest, staging / "view")
        complete = local_release(volume, options.env_name, target.version) is not None
        clear_garbled(final, complete, f"release {options.env} {target.version}", report)
        publish_directory(staging / "view", final)
    finally:
        discard(staging)


def _warm_or_target(
    options: BootOptions, volume: Volume, report: BootReport
) -> tuple[dict[str, Any] | None, Target]:
    """The complete release's marker on the volume (None: cold), and the release resolved."""
    marker = pinned_warm(options, volume)
    if marker is not None:
        return marker, Target(marker["version"], marker["digest"], "pinned")
    pinned = pinned_target(options, lambda: _open_store(options))
    if pinned is not None:
        return None, pinned
    target = _channel_target(options, volume, report)
    marker = local_release(volume, options.env_name, target.version)
    if marker is not None and marker["digest"] != target.digest:
        raise BootError(
            f"the volume's release {options.env} {target.version} differs from the store's ({target.digest})."
        )
    return marker, target


def prepare(options: BootOptions, report: BootReport) -> ReadyRelease:
    """Make the asked-for release ready on the volume (warm or cold), recording how in ``report``."""
    from podenv.runpod.mount import FIX, missing_network_volume

    started = since = time.monotonic()
    check_names(options)
    missing = missing_network_volume(options.root)
    if missing:
        raise BootError(f"{missing}; {FIX}.")
    volume = Volume(options.root)
    volume.make_dirs()
    reserve_report(options.root, report)  # a boot that fills the disk can still report it
    reclaim_dead(volume, options.lease_timeout)
    marker, target = _warm_or_target(options, volume, report)
    report.warm = marker is not None
    if marker is None:
        try:
            _install_release(options, volume, target, report)
        except StoreError as error:
            raise BootError(f"cold boot of {options.env} needs the store and it failed: {error}") from None
        marker = local_release(volume, options.env_name, target.version)
        if marker is None:  # a layer went meanwhile (a gc elsewhere, a damaged volume): once more
            _install_release(options, volume, target, report)
            marker = local_release(volume, options.env_name, target.version)
        if marker is None:
            raise BootError(
                f"release {options.env} {target.version} is still incomplete on {volume.root} "
                "after its install "
                "(another program changed the volume meanwhile?)",
                fix="boot again; if it recurs, run `podenv gc` and check what else writes there.",
            )
    else:
        report.phase("resolve", since)
        # Recency for `podenv gc --keep N`: the release marker's mtime is its last boot.
        os.utime(volume.release_dir(options.env_name, marker["version"]) / RELEASE_MARKER)
    report.version, report.digest = marker["version"], marker["digest"]
    directory = volume.release_dir(options.env_name, marker["version"])
    report.phases["total"] = round(time.monotonic() - started, 4)
    return ReadyRelease(
        directory, (directory / VIEW_DIRS[ENV_TARGET]).resolve(), marker["version"], marker["digest"]
    )
