"""sha256 digests in the ``sha256:<hex>`` form used by manifests, stores and markers."""

import hashlib
import re
from pathlib import Path

from podenv.errors import PodenvError
from podenv.fileio import read_file_chunks

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


def format_digest(hexdigest: str) -> str:
    return f"sha256:{hexdigest}"


def digest_hex(digest: str) -> str:
    """The 64 hex characters of a ``sha256:<hex>`` digest, after checking its form."""
    if not DIGEST_PATTERN.match(digest):
        raise PodenvError(
            f"'{digest}' is not a digest", fix="expected 'sha256:' and 64 lowercase hex digits."
        )
    return digest.removeprefix("sha256:")


def digest_bytes(data: bytes) -> str:
    return format_digest(hashlib.sha256(data).hexdigest())


def digest_file(path: Path) -> str:
    hasher = hashlib.sha256()
    for chunk in read_file_chunks(path):
        hasher.update(chunk)
    return format_digest(hasher.hexdigest())
