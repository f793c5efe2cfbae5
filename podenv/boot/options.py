"""What `podenv boot` is asked to do: the release (shared with doctor) and how to install it."""

from dataclasses import dataclass
from pathlib import Path

from podenv.resolve import ReleaseOptions


@dataclass(frozen=True)
class BootOptions(ReleaseOptions):
    keep_blobs: bool = False
    lease_timeout: float = 60.0
    wait_timeout: float = 400.0
    # File writer threads per installing process; None: by the target's filesystem
    # (`podenv.fileio.file_writers`): they pay off where a create is a network round trip.
    writers: int | None = None
    # Where the env layer goes (ADR 0013): "volume" (with the models) or "local" (the
    # worker's own disk at ``local_root``, installed at each worker start from the volume's
    # blob cache). Model layers, views, reports and in-use files stay on the volume.
    placement: str = "volume"
    local_root: Path | None = None
    # The worker image is only the bootstrap: refuse a release that carries no handler code.
    require_code: bool = False

    @property
    def local(self) -> bool:
        return self.placement == "local"

    # Processes installing blobs (shards, layers) side by side; 0: the CPUs the worker has.
    jobs: int = 0

    @property
    def env_name(self) -> str:
        """The env to boot; boot refuses to start without one (see `resolve.check_names`)."""
        return self.env or ""
