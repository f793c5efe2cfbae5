"""The few object operations a store needs, implemented once per kind of storage.

Keys are '/'-separated relative paths. Conditional writes are the heart of it:
``if_none_match`` creates only (the object must not exist) and ``if_match`` replaces only
the exact version the caller read; both raise PreconditionFailed otherwise.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from podenv import settings
from podenv.errors import PodenvError
from podenv.progress import Progress


class PreconditionFailed(Exception):
    """A conditional write did not apply; the Store turns this into a user-facing error."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int


@dataclass(frozen=True)
class TransferConfig:
    """How big objects move. Parts and ranges travel in parallel, ``concurrency`` at a time.

    Reads of a blob are bounded (see podenv.store.ranged): a range that fails is retried
    from its last good byte up to ``attempts`` times in all; a socket read that waits longer
    than ``read_timeout`` is a stall; a range that averages under ``min_rate`` bytes/s over
    ``read_timeout`` seconds is a trickle; a whole blob must arrive within ``deadline``
    seconds. The defaults leave room in RunPod's 7-minute RUNPOD_INIT_TIMEOUT for the
    install after the fetch: a stalled store is reported within about 2 minutes.
    """

    multipart_threshold: int = 64 << 20
    part_size: int = 16 << 20
    range_size: int = 8 << 20
    concurrency: int = 8
    attempts: int = field(default_factory=lambda: _number(settings.STORE_ATTEMPTS, int))
    read_timeout: float = field(default_factory=lambda: _number(settings.STORE_READ_TIMEOUT, float))
    min_rate: int = field(default_factory=lambda: _number(settings.STORE_MIN_RATE, int))
    deadline: float = field(default_factory=lambda: _number(settings.STORE_DEADLINE, float))
    # An instant on time.monotonic() by which every read must have ended, whatever blob it
    # is: a boot's one deadline over its whole install (see install_deadline); None: none.
    until: float | None = None


def install_deadline() -> float:
    """Seconds a cold boot's store reads may take together (PODENV_STORE_INSTALL_DEADLINE)."""
    return float(_number(settings.STORE_INSTALL_DEADLINE, float))


def _number(setting: settings.Setting, kind: type[int] | type[float]) -> Any:
    value = setting.read() or ""
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise PodenvError(
            f"{setting.name} is '{value[:40]}', not a positive number",
            fix="unset it or set a number above 0.",
        )
    return number


class ObjectBackend(Protocol):
    url: str

    def head(self, key: str) -> ObjectInfo | None: ...

    def get(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and an opaque version tag for ``put_bytes(if_match=...)``."""
        ...

    def iter_chunks(self, key: str, size: int, progress: Progress | None) -> Iterator[bytes]:
        """The object's bytes in order, fetched in parallel where the backend can."""
        ...

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write ``data``; return the new version tag."""
        ...

    def put_file(self, key: str, path: Path, progress: Progress | None) -> None:
        """Create ``key`` from a file, only if it does not exist yet."""
        ...

    def list_keys(self, prefix: str) -> list[str]: ...
