"""`podenv boot` and `podenv doctor` as RunPod runs them (RUNPOD_ENDPOINT_ID set) without a
network volume: one line saying to attach one, and nothing created on the container disk."""

import subprocess
import uuid
from pathlib import Path

from tests.integration.boot_support import PODENV, clean_environment


def _run(*argv: str, root: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    environment = clean_environment(
        {"RUNPOD_ENDPOINT_ID": "ep123", "PODENV_ROOT": str(root), "PODENV_ENV": "tts", **extra}
    )
    environment.pop("RUNPOD_POD_ID", None)
    return subprocess.run([*PODENV, *argv], capture_output=True, text=True, env=environment, timeout=120)


def test_boot_without_a_network_volume_refuses_in_one_line_and_creates_nothing() -> None:
    top = Path(f"/podenv-test-{uuid.uuid4().hex[:8]}")
    root = top / "runpod-volume" / "podenv"

    result = _run("boot", "--exec", "--", "true", root=root, PODENV_STORE="s3://bucket/podenv")

    assert result.returncode == 11
    assert result.stderr.strip().splitlines() == [
        f"podenv: error: no network volume is mounted: {root} would be on the container disk; attach a "
        "network volume in the datacenter of the endpoint's GPUs (workers mount it at /runpod-volume), or "
        "set PODENV_ALLOW_NO_VOLUME=1 to install on the container disk at every start."
    ]
    assert not top.exists()


def test_doctor_fails_the_volume_check_with_the_fix() -> None:
    top = Path(f"/podenv-test-{uuid.uuid4().hex[:8]}")
    root = top / "runpod-volume" / "podenv"

    result = _run("doctor", root=root)

    (volume,) = [
        line for line in result.stderr.splitlines() if line.startswith(("PASS volume", "FAIL volume"))
    ]
    assert volume.startswith(
        f"FAIL volume: no network volume is mounted: {root} would be on the container disk"
    )
    assert "fix: attach a network volume in the datacenter of the endpoint's GPUs" in volume
    assert result.returncode == 1
    assert not top.exists()
