"""Deterministic tar.zst layers: a writer that gives the same bytes for the same tree, and a
streaming reader that hashes, decompresses and safely extracts in one pass."""

from podenv.archive.reader import ExtractResult, Limits, extract_file, extract_shard, extract_stream
from podenv.archive.writer import (
    ArchiveEntry,
    ArchiveInfo,
    entries_from_tree,
    pack_tree,
    write_archive,
)

__all__ = [
    "ArchiveEntry",
    "ArchiveInfo",
    "ExtractResult",
    "Limits",
    "entries_from_tree",
    "extract_file",
    "extract_shard",
    "extract_stream",
    "pack_tree",
    "write_archive",
]
