"""The few object operations a store needs, implemented once per kind of storage.

Keys are '/'-separated relative paths. Conditional writes are the heart of it:
``if_none_match`` creates only (the object must not exist) and ``if_match`` replaces only
the exact version the caller read; both raise PreconditionFailed otherwise.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podenv.progress import Progress


class PreconditionFailed(Exception):
    """A conditional write did not apply; the Store turns this into a user-facing error."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int


@dataclass(frozen=True)
class TransferConfig:
    """How big objects move. Parts and ranges travel in parallel, ``concurrency`` at a time."""

    multipart_threshold: int = 64 << 20
    part_size: int = 16 << 20
    range_size: int = 8 << 20
    concurrency: int = 8


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
