"""What `podenv boot` is asked to do: the release (shared with doctor) and how to install it."""

from dataclasses import dataclass

from podenv.resolve import ReleaseOptions


@dataclass(frozen=True)
class BootOptions(ReleaseOptions):
    keep_blobs: bool = False
    lease_timeout: float = 60.0
    wait_timeout: float = 400.0
    # Parallel file writers: they pay off where a create is a network round trip (the
    # volume); on a local disk or tmpfs with few cores, fewer writers are faster.
    writers: int = 16

    @property
    def env_name(self) -> str:
        """The env to boot; boot refuses to start without one (see `resolve.check_names`)."""
        return self.env or ""
