"""`podenv verify`: re-hash an installed release's layers against their archives.

A warm boot checks markers only (ADR 0011): hashing a big env at every boot would cost
minutes. This is the operator's question "has anything changed since the install?": each
layer's archive is streamed again (from the volume's blob cache, else the store), verified
by its digest, and every member compared with what the layer directory holds, the env's
recorded files relocated in memory first. Files the archive does not have are differences too.
"""

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from podenv.archive.reader import _BoundedTarInfo, _HashingChunkReader, _member_name
from podenv.errors import IntegrityError
from podenv.manifest import Layer
from podenv.relocate import Relocation, read_relocations, relocated
from podenv.volume import MARKER, Volume

_READ = 1 << 20
_SHOWN = 5


@dataclass
class LayerCheck:
    layer: Layer
    entries: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        if not self.differences:
            return f"OK   layer {self.layer.name} ({self.layer.digest}): {self.entries} entries as installed"
        shown = "; ".join(self.differences[:_SHOWN])
        more = f" and {len(self.differences) - _SHOWN} more" if len(self.differences) > _SHOWN else ""
        count = len(self.differences)
        return f"DIFF layer {self.layer.name} ({self.layer.digest}): {count} differences: {shown}{more}"


def _file_digest(path: Path) -> str | None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        hasher = hashlib.sha256()
        while chunk := stream.read(_READ):
            hasher.update(chunk)
    return hasher.hexdigest()


def _member_digest(content: IO[bytes], relocation: Relocation | None, prefix: str) -> str:
    if relocation is not None:
        return hashlib.sha256(relocated(content.read(), relocation, prefix)).hexdigest()
    hasher = hashlib.sha256()
    while chunk := content.read(_READ):
        hasher.update(chunk)
    return hasher.hexdigest()


def _compare(check: LayerCheck, directory: Path, tar: tarfile.TarFile, expected: dict[str, str]) -> set[str]:
    relocations = (
        {entry.path: entry for entry in read_relocations(directory)} if check.layer.kind == "env" else {}
    )
    seen: set[str] = set()
    for member in tar:
        name = _member_name(member)
        seen.add(name)
        check.entries += 1
        path = directory / name
        if member.isdir():
            if not path.is_dir() or path.is_symlink():
                check.differences.append(f"{name}: not a directory")
        elif member.issym():
            if not path.is_symlink() or os.readlink(path) != member.linkname:
                check.differences.append(f"{name}: not the link to {member.linkname}")
        elif member.isreg():
            content = tar.extractfile(member)
            assert content is not None
            expected[name] = _member_digest(content, relocations.get(name), str(directory))
            if _file_digest(path) != expected[name]:
                check.differences.append(f"{name}: content differs")
        elif member.islnk():
            source = _member_name(tarfile.TarInfo(member.linkname))
            if _file_digest(path) != expected.get(source):
                check.differences.append(f"{name}: content differs")
    return seen


def _extra_entries(directory: Path, seen: set[str]) -> Iterator[str]:
    for folder, folders, files in os.walk(directory):
        for name in folders + files:
            relative = os.path.relpath(os.path.join(folder, name), directory)
            if relative not in seen and relative != MARKER:
                yield f"{relative}: not in the layer"


def verify_layer(volume: Volume, layer: Layer, chunks: Iterable[bytes]) -> LayerCheck:
    """Compare the installed ``layer`` with its archive arriving as ``chunks``."""
    directory = volume.layer_dir(layer.digest)
    check = LayerCheck(layer)
    if not directory.is_dir():
        check.differences.append("the layer is not installed")
        return check
    source = _HashingChunkReader(chunks, None)
    decompressed = zstandard.ZstdDecompressor().stream_reader(cast(BinaryIO, source), read_across_frames=True)
    with tarfile.open(fileobj=decompressed, mode="r|", tarinfo=_BoundedTarInfo) as tar:
        seen = _compare(check, directory, tar, {})
    source.drain()
    if source.digest != layer.digest:
        raise IntegrityError(
            f"the archive of layer {layer.name} hashes to {source.digest}, not {layer.digest}",
            fix="its blob in the store (or the volume's blob cache) is damaged.",
        )
    check.differences.extend(_extra_entries(directory, seen))
    return check
