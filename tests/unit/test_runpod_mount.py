"""Under RunPod, a root on the container's own disk is refused unless container-disk-only is said."""

import uuid
from pathlib import Path

from podenv.runpod.mount import missing_network_volume, mount_point

# A top-level directory that does not exist lies on the filesystem mounted at /.
NOWHERE = Path(f"/podenv-test-{uuid.uuid4().hex[:8]}") / "runpod-volume" / "podenv"


def test_outside_runpod_nothing_is_required() -> None:
    assert missing_network_volume(NOWHERE, {}) is None


def test_under_runpod_the_container_disk_is_refused() -> None:
    for marker in ("RUNPOD_ENDPOINT_ID", "RUNPOD_POD_ID"):
        reason = missing_network_volume(NOWHERE, {marker: "abc"})
        assert reason == f"no network volume is mounted: {NOWHERE} would be on the container disk"


def test_container_disk_only_is_allowed_when_said() -> None:
    assert missing_network_volume(NOWHERE, {"RUNPOD_POD_ID": "p", "PODENV_ALLOW_NO_VOLUME": "1"}) is None
    assert missing_network_volume(NOWHERE, {"RUNPOD_POD_ID": "p", "PODENV_ALLOW_NO_VOLUME": "0"}) is not None


def test_a_root_on_another_mount_is_a_volume() -> None:
    # /proc is a mount on every Linux: a root below it is not on the container's / filesystem.
    assert mount_point(Path("/proc/podenv/x")) == Path("/proc")
    assert missing_network_volume(Path("/proc/podenv"), {"RUNPOD_ENDPOINT_ID": "e"}) is None
    assert mount_point(NOWHERE) == Path("/")


def test_default_placement_is_local_under_runpod_and_volume_elsewhere():
    from podenv.runpod.mount import default_placement

    assert default_placement({}) == "volume"
    assert default_placement({"RUNPOD_ENDPOINT_ID": "e"}) == "local"
    assert default_placement({"RUNPOD_POD_ID": "p"}) == "local"
    assert default_placement({"RUNPOD_POD_ID": "p", "PODENV_PLACEMENT": "volume"}) == "volume"
    assert default_placement({"PODENV_PLACEMENT": "local"}) == "local"
