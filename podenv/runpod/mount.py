"""Under RunPod the release must land on a network volume: without one, `/runpod-volume` is
just a directory on the container disk, every worker installs again at every start, and
nothing says so. Boot and doctor ask here first.

RunPod sets RUNPOD_ENDPOINT_ID in serverless workers and RUNPOD_POD_ID in Pods. A root on the
container's own filesystem (mounted at /) is not a network volume; PODENV_ALLOW_NO_VOLUME=1
says container-disk-only is intended (`podenv deploy` sets it for an endpoint without volumes).
"""

import os
from collections.abc import Mapping
from pathlib import Path

from podenv import settings

RUNPOD_MARKERS = ("RUNPOD_ENDPOINT_ID", "RUNPOD_POD_ID")
FIX = (
    "attach a network volume in the datacenter of the endpoint's GPUs (workers mount it at "
    f"/runpod-volume), or set {settings.ALLOW_NO_VOLUME.name}=1 to install on the container disk "
    "at every start"
)


def under_runpod(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in RUNPOD_MARKERS)


def default_placement(environ: Mapping[str, str] | None = None) -> str:
    """PODENV_PLACEMENT if set; else `local` under RunPod, where a ready worker took 59 s with
    the env on the container disk against 262 s on the MooseFS volume (ADR 0013), and `volume`
    elsewhere (a development machine has no slow network volume and one root is simpler)."""
    return settings.PLACEMENT.read(environ) or ("local" if under_runpod(environ) else "volume")


def without_network_volume(root: Path, environ: Mapping[str, str] | None = None) -> bool:
    """Under RunPod with ``root`` on the container disk (PODENV_ALLOW_NO_VOLUME=1 let it boot):
    a blob cache there would only be a second copy on the same disk, lost at the next start."""
    return under_runpod(environ) and mount_point(root) == Path("/")


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem ``path`` is on, or would be created on."""
    current = Path(os.path.abspath(path))
    while not current.exists():
        current = current.parent
    current = current.resolve()
    while not os.path.ismount(current):
        current = current.parent
    return current


def missing_network_volume(root: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``root`` is not on a network volume under RunPod; None when it is, or need not be."""
    if not under_runpod(environ) or settings.ALLOW_NO_VOLUME.read(environ) == "1":
        return None
    if mount_point(root) != Path("/"):
        return None
    return f"no network volume is mounted: {root} would be on the container disk"
