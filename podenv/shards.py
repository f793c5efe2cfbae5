"""Package-sharded env layers: the format, the build box's writer, and the index a worker trusts.

An env layer is cut along package boundaries. Each shard is a deterministic tar.zst of files
only (a blob of its own); the layer's directories and symlinks live in its index:

    {"media_type": SHARD_INDEX_MEDIA_TYPE,
     "directories": ["bin", "lib", ...],                      sorted, parents before children
     "symlinks": [["lib/libz.so", "libz.so.1"], ...],         sorted by name
     "shards": [{"name", "digest", "size", "unpacked_size", "files"}, ...]}   sorted by name

The index is stored as a blob too, in canonical JSON; its sha256 is the layer's identity.

Which file goes into which shard: the files a conda package's ``conda-meta/*.json`` lists go to
``conda-<name>``; the files a PyPI wheel's ``RECORD`` lists (when no conda package owns them) to
``pypi-<name>``; byte-code to the owner of its source; everything else (conda-meta itself, the
relocation list, conda-pack's scripts) to ``unowned``. A package bigger than ``SHARD_LIMIT`` is
cut into ``-partNNN`` shards at deterministic points (sorted names, whole files), so that one
package does not bound a parallel install. A package that did not change keeps its shard's
digest wherever it is built, so a worker that has it already fetches nothing for it.
"""

import csv
import io
import json
import multiprocessing
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from podenv.archive import ArchiveEntry, write_archive
from podenv.digests import DIGEST_PATTERN, digest_bytes, digest_hex
from podenv.errors import PodenvError, UnsafeArchiveError
from podenv.manifest import canonical_json

SHARD_INDEX_MEDIA_TYPE = "application/vnd.podenv.layer.v2.shards+json"
UNOWNED = "unowned"
INDEX_FILE = "index.json"
# Packages above this many bytes of content are cut. 64 MiB keeps the biggest shard of a
# torch env near a second of work for one process, and the count of blobs in the hundreds.
SHARD_LIMIT = 64 << 20
# zstd level of a shard: twice level 3's speed for 6% more bytes on an env's big libraries
# (ADR 0012). A shard's digest depends on it: a change re-sends every shard once.
SHARD_LEVEL = 2
# An index is read whole into memory: refuse one larger than any real env needs.
INDEX_SIZE_LIMIT = 64 << 20
_PYC = re.compile(r"^(?P<dir>(?:.*/)?)__pycache__/(?P<stem>[^/.]+)\.[^/]*\.pyc$")
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


class ShardIndexError(UnsafeArchiveError):
    """A layer's shard index is malformed or unsafe."""


@dataclass(frozen=True)
class Shard:
    name: str
    digest: str
    size: int
    unpacked_size: int
    files: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ShardIndex:
    directories: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]
    shards: tuple[Shard, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "media_type": SHARD_INDEX_MEDIA_TYPE,
            "directories": list(self.directories),
            "symlinks": [list(link) for link in self.symlinks],
            "shards": [shard.to_json() for shard in self.shards],
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        return digest_bytes(self.canonical_bytes())

    @property
    def files(self) -> int:
        return sum(shard.files for shard in self.shards) + len(self.symlinks)

    @property
    def unpacked_size(self) -> int:
        return sum(shard.unpacked_size for shard in self.shards)

    @property
    def size(self) -> int:
        """Bytes a worker fetches for the layer from nothing: every shard and the index."""
        return sum(shard.size for shard in self.shards) + len(self.canonical_bytes())


# Which package owns which file


def _conda_owners(prefix: Path) -> dict[str, str]:
    owners: dict[str, str] = {}
    for record_path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict) or "name" not in record:
            continue  # podenv's relocation list and other non-records
        for path in record.get("files", []):
            owners.setdefault(path, f"conda-{record['name']}")
    return owners


def _wheel_name(dist_info: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_info.removesuffix(".dist-info").split("-")[0]).lower()


def _record_paths(record: Path, prefix: Path) -> Iterable[str]:
    """The prefix-relative paths a wheel's RECORD lists (relative to its site-packages)."""
    site = record.parent.parent.relative_to(prefix).as_posix()
    for row in csv.reader(io.StringIO(record.read_text(errors="replace"))):
        if not row or not row[0]:
            continue
        path = os.path.normpath(f"{site}/{row[0]}")
        if not path.startswith(("../", "/")) and path != "..":
            yield path


def package_owners(prefix: Path) -> dict[str, str]:
    """Each file of a built prefix that a package owns, mapped to its shard's base name."""
    owners = _conda_owners(prefix)
    # site-packages, or dist-packages where the python is Debian's: wherever a wheel went.
    for record in sorted(prefix.rglob("*.dist-info/RECORD")):
        name = f"pypi-{_wheel_name(record.parent.name)}"
        for path in _record_paths(record, prefix):
            owners.setdefault(path, name)
    return owners


def owner_of(path: str, owners: Mapping[str, str]) -> str:
    """The shard base a file goes to: its package's, its source's for byte-code, else unowned."""
    owner = owners.get(path)
    if owner is not None:
        return owner
    match = _PYC.match(path)
    if match is not None:
        return owners.get(f"{match['dir']}{match['stem']}.py", UNOWNED)
    return UNOWNED


# Cutting and writing


def _entry_size(entry: ArchiveEntry) -> int:
    if entry.data is not None:
        return len(entry.data)
    assert entry.source is not None
    return entry.source.stat().st_size


def cut_package(entries: list[ArchiveEntry], limit: int) -> list[list[ArchiveEntry]]:
    """The package's files in name order, cut before a file that would take a part past ``limit``.

    Deterministic for the same files; a file larger than ``limit`` is a part of its own.
    """
    parts: list[list[ArchiveEntry]] = [[]]
    filled = 0
    for entry in sorted(entries, key=lambda entry: entry.name):
        size = _entry_size(entry)
        if parts[-1] and filled + size > limit:
            parts.append([])
            filled = 0
        parts[-1].append(entry)
        filled += size
    return parts


def plan_shards(
    entries: Iterable[ArchiveEntry], owners: Mapping[str, str], limit: int = SHARD_LIMIT
) -> tuple[dict[str, list[ArchiveEntry]], list[str], list[tuple[str, str]]]:
    """(shard name -> its files, directories, symlinks) for the layer's entries."""
    packages: dict[str, list[ArchiveEntry]] = {}
    directories: set[str] = set()
    symlinks: list[tuple[str, str]] = []
    for entry in entries:
        parent = entry.name.rpartition("/")[0]
        while parent and parent not in directories:
            directories.add(parent)
            parent = parent.rpartition("/")[0]
        if entry.kind == "dir":
            directories.add(entry.name)
        elif entry.kind == "symlink":
            symlinks.append((entry.name, entry.link_target or ""))
        else:
            packages.setdefault(owner_of(entry.name, owners), []).append(entry)
    shards: dict[str, list[ArchiveEntry]] = {}
    for package, files in packages.items():
        parts = cut_package(files, limit)
        for number, part in enumerate(parts):
            shards[package if len(parts) == 1 else f"{package}-part{number:03d}"] = part
    return shards, sorted(directories), sorted(symlinks)


_plan: dict[str, list[ArchiveEntry]] = {}


def _receive_plan(plan: dict[str, list[ArchiveEntry]]) -> None:
    """A pack process's copy of the plan, inherited through the fork: its 60,000 entries and
    the rewritten texts among them are never pickled through the pool's pipe."""
    global _plan
    _plan = plan


def _write_planned_shard(name: str, directory: Path) -> Shard:
    return _write_shard(name, _plan[name], directory)


def _write_shard(name: str, entries: list[ArchiveEntry], directory: Path) -> Shard:
    temporary = directory / f".{uuid.uuid4().hex}.tar.zst"
    # One zstd thread per shard: shards run side by side, and threads >= 1 give the same bytes.
    # Not fsynced one by one (hundreds of syncs serialise the pack on the disk): a shard torn
    # by a crash cannot pass for whole, since publishing hashes every blob again (put_blob).
    info = write_archive(entries, temporary, level=SHARD_LEVEL, threads=1, durable=False)
    temporary.replace(directory / digest_hex(info.digest))
    return Shard(name, info.digest, info.size, info.unpacked_size, info.files)


def write_sharded_layer(
    entries: Iterable[ArchiveEntry],
    owners: Mapping[str, str],
    output: Path,
    *,
    limit: int = SHARD_LIMIT,
    jobs: int | None = None,
) -> ShardIndex:
    """Write every shard as ``output/<hex>`` and the index as ``output/index.json``.

    ``output`` must not exist; it appears whole (one rename) or not at all.
    """
    if output.exists():
        raise PodenvError(f"{output} exists already; remove it to pack the layer again.")
    plan, directories, symlinks = plan_shards(entries, owners, limit)
    work = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    work.mkdir(parents=True)
    try:
        # Biggest first, so the last shard to finish is a small one.
        order = sorted(plan, key=lambda name: -sum(_entry_size(entry) for entry in plan[name]))
        # Processes, not threads: tarfile's header work per file holds the GIL (60,000 files).
        context = multiprocessing.get_context("fork")
        processes = jobs or os.cpu_count() or 1
        with ProcessPoolExecutor(processes, context, initializer=_receive_plan, initargs=(plan,)) as pool:
            written = list(pool.map(_write_planned_shard, order, repeat(work)))
        index = ShardIndex(tuple(directories), tuple(symlinks), tuple(sorted(written, key=lambda s: s.name)))
        (work / INDEX_FILE).write_bytes(index.canonical_bytes())
        work.rename(output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return index


def layer_blobs(output: Path, index: ShardIndex) -> dict[str, Path]:
    """Every blob of a written layer (the shards and the index), by digest, for publishing."""
    blobs = {shard.digest: output / digest_hex(shard.digest) for shard in index.shards}
    blobs[index.digest] = output / INDEX_FILE
    return blobs


# Reading an index a worker fetched (untrusted)


def _safe_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or "\0" in name:
        raise ShardIndexError(f"the layer's index names {what} {name!r}, which is not a relative path.")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ShardIndexError(f"the layer's index names {what} '{name}', which is not a plain relative path.")
    return name


def _shard_from(document: Any) -> Shard:
    try:
        shard = Shard(**{key: document[key] for key in ("name", "digest", "size", "unpacked_size", "files")})
    except (TypeError, KeyError):
        raise ShardIndexError(
            f"the layer's index has a malformed shard entry: {str(document)[:120]}."
        ) from None
    valid = (
        isinstance(shard.name, str)
        and _SHARD_NAME.match(shard.name)
        and isinstance(shard.digest, str)
        and DIGEST_PATTERN.match(shard.digest)
        and all(
            isinstance(value, int) and value >= 0 for value in (shard.size, shard.unpacked_size, shard.files)
        )
    )
    if not valid:
        raise ShardIndexError(f"the layer's index has a malformed shard entry: {str(document)[:120]}.")
    return shard


def _check_tree(directories: list[str], symlinks: list[tuple[str, str]]) -> None:
    """Every directory's parent is a directory; no name is both; a link's parent is a directory."""
    known = {""}
    for name in directories:
        if name.rpartition("/")[0] not in known:
            raise ShardIndexError(
                f"the layer's index lists directory '{name}' before (or without) its parent."
            )
        known.add(name)
    if len(known) != len(directories) + 1:
        raise ShardIndexError("the layer's index lists a directory twice.")
    names = set()
    for name, _ in symlinks:
        if name in known or name in names:
            raise ShardIndexError(f"the layer's index lists '{name}' twice (as a link and again).")
        if name.rpartition("/")[0] not in known:
            raise ShardIndexError(
                f"the layer's index puts link '{name}' below something that is not a directory."
            )
        names.add(name)


def parse_index(data: bytes, expected_digest: str) -> ShardIndex:
    """The index of a layer, from bytes that must hash to ``expected_digest``; checked for safety."""
    actual = digest_bytes(data)
    if actual != expected_digest:
        raise PodenvError(
            f"the layer's index is corrupt: expected {expected_digest} but the bytes hash to {actual}; "
            "it was refused and nothing was kept."
        )
    try:
        document = json.loads(data)
        directories = [_safe_name(name, "directory") for name in document["directories"]]
        symlinks = [(_safe_name(name, "link"), str(target)) for name, target in document["symlinks"]]
        shards = tuple(_shard_from(shard) for shard in document["shards"])
        if document.get("media_type") != SHARD_INDEX_MEDIA_TYPE:
            raise ShardIndexError(f"the layer's index has media type {document.get('media_type')!r}.")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ShardIndexError(f"the layer's index is not a shard index: {type(error).__name__}.") from None
    _check_tree(directories, symlinks)
    if len({shard.digest for shard in shards}) != len(shards):
        raise ShardIndexError("the layer's index names one shard twice.")
    return ShardIndex(tuple(directories), tuple(symlinks), shards)
