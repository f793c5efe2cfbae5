"""What a release needs on RunPod, from its manifest: container disk, volume size, the time a
first (cold) boot may take, and the CUDA floor for worker placement.

The rates are this repository's figures (docs/deploy-runpod.md, "Sizes"): extraction from
bench/archive_throughput.py, per-file cost on a network volume from runpod-python PR #538.
They err on the slow side: a timeout too short kills a healthy worker in a loop.
"""

import math
from dataclasses import dataclass

from podenv.manifest import Layer, Manifest

GIB = 1 << 30
BASE_DISK_GB = 10  # the image (~0.2 GB) and the handler's scratch audio
MARGIN = 1.10
RELEASES_KEPT = 2  # the live release and the one a rollback returns to (`podenv gc --keep 2`)
FETCH_BYTES_PER_S = 50e6  # assumed store throughput to one worker
EXTRACT_BYTES_PER_S = 60e6  # unpacked bytes, one worker, measured on the development VM
VOLUME_SECONDS_PER_FILE = 62 / 40_000  # runpod-python PR #538, parallel writers
STARTUP_S = 120  # image pull, container start, the handler loading its models
MIN_INIT_TIMEOUT_S = 600  # RunPod's own default is 420 s


@dataclass(frozen=True)
class Sizes:
    container_disk_gb: int
    volume_gb: int
    cold_boot_s: int
    init_timeout_s: int
    min_cuda: str | None


def _on_local_disk(layer: Layer, placement: str, has_volume: bool) -> bool:
    return not has_volume or (placement == "local" and layer.kind == "env")


def _gb(byte_count: float) -> int:
    return math.ceil(byte_count * MARGIN / GIB)


def container_disk_gb(manifest: Manifest, placement: str, has_volume: bool) -> int:
    local = sum(
        layer.unpacked_size for layer in manifest.layers if _on_local_disk(layer, placement, has_volume)
    )
    return BASE_DISK_GB + _gb(local)


def volume_gb(manifest: Manifest, placement: str) -> int:
    """Room for RELEASES_KEPT releases: every blob, and what is unpacked onto the volume."""
    per_release = sum(
        layer.size + (0 if placement == "local" and layer.kind == "env" else layer.unpacked_size)
        for layer in manifest.layers
    )
    return min(4096, max(10, _gb(RELEASES_KEPT * per_release) + 1))


def cold_boot_seconds(manifest: Manifest, placement: str, has_volume: bool) -> int:
    """Fetch and extraction run in one streamed pass per layer: the slower of the two counts."""
    total = float(STARTUP_S)
    for layer in manifest.layers:
        total += max(layer.size / FETCH_BYTES_PER_S, layer.unpacked_size / EXTRACT_BYTES_PER_S)
        if not _on_local_disk(layer, placement, has_volume):
            total += layer.files * VOLUME_SECONDS_PER_FILE
    return math.ceil(total)


def init_timeout_seconds(cold_boot_s: int) -> int:
    """Twice the estimate, in whole minutes, never under MIN_INIT_TIMEOUT_S."""
    return max(MIN_INIT_TIMEOUT_S, math.ceil(2 * cold_boot_s / 60) * 60)


def cuda_floor(cuda: str | None) -> str | None:
    """The release's CUDA requirement as RunPod's `major.minor` (12 -> 12.0, 12.4.1 -> 12.4)."""
    if cuda is None:
        return None
    parts = [*cuda.split("."), "0"]
    return f"{int(parts[0])}.{int(parts[1])}"


def sizes_for(manifest: Manifest, placement: str, has_volume: bool) -> Sizes:
    cold = cold_boot_seconds(manifest, placement, has_volume)
    return Sizes(
        container_disk_gb=container_disk_gb(manifest, placement, has_volume),
        volume_gb=volume_gb(manifest, placement),
        cold_boot_s=cold,
        init_timeout_s=init_timeout_seconds(cold),
        min_cuda=cuda_floor(manifest.cuda),
    )
