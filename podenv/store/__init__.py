"""One interface over ``file:///path`` and ``s3://bucket/prefix`` stores."""

from pathlib import Path
from urllib.parse import urlparse

from podenv.errors import PodenvError
from podenv.store.backend import TransferConfig
from podenv.store.store import BlobUpload, Store, Versioned, blob_key, channel_key, release_key

__all__ = [
    "BlobUpload",
    "Store",
    "TransferConfig",
    "Versioned",
    "blob_key",
    "channel_key",
    "open_store",
    "release_key",
]


def open_store(url: str, *, endpoint_url: str | None = None, transfer: TransferConfig | None = None) -> Store:
    """Open the store at ``url``: ``file:///path`` or ``s3://bucket/prefix``."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from podenv.store.filesystem import FileBackend

        return Store(FileBackend(Path(urlparse(url).path)))
    if scheme == "s3":
        from podenv.store.s3 import S3Backend

        return Store(S3Backend(url, endpoint_url=endpoint_url, transfer=transfer))
    raise PodenvError(f"'{url}' is not a store URL", fix="use file:///PATH or s3://BUCKET/PREFIX.")
