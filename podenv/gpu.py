"""The driver's CUDA version, from NVML (no dependency: ctypes) or nvidia-smi, if there is a GPU."""

import ctypes
import re
import shutil
import subprocess

from podenv.errors import DriverTooOldError

_SMI_CUDA = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")


def _from_nvml() -> str | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        version = ctypes.c_int()
        if nvml.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) != 0:
            return None
        return f"{version.value // 1000}.{(version.value % 1000) // 10}"
    finally:
        nvml.nvmlShutdown()


def _from_nvidia_smi() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        output = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _SMI_CUDA.search(output)
    return match.group(1) if match else None


def driver_cuda_version() -> str | None:
    """The highest CUDA version the installed driver supports, or None without a GPU driver."""
    return _from_nvml() or _from_nvidia_smi()


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check_driver(required: str | None, found: str | None, release: str) -> None:
    """Refuse a driver older than the release's CUDA needs; nothing to check without either."""
    if required is None or found is None:
        return
    if _as_tuple(found) < _as_tuple(required):
        raise DriverTooOldError(
            f"the NVIDIA driver here supports CUDA {found}, but {release} needs CUDA {required} or later",
            fix="pick GPUs whose driver supports it (RunPod's CUDA version filter) or boot an older release.",
        )
