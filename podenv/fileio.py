"""Small file helpers shared by the archive, the stores and the digests."""

from collections.abc import Iterator
from pathlib import Path

CHUNK_SIZE = 1 << 20


def read_file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk
