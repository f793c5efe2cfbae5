"""Relocating an unpacked environment to the path it will live at, in-process and in parallel.

The env layer records, in its relocations file (``layout.RELOCATIONS_FILE``), every file that holds a
prefix placeholder: conda packages' own placeholders (text or binary) and podenv's
placeholder for the build directory. Text files get the new prefix in place of the
placeholder; binary files get conda's treatment: within each NUL-terminated string the
placeholder is replaced and the string padded with NULs to its old length, so offsets in
the binary stay valid (which is why the new prefix must not be longer than the placeholder).

The list comes from the layer, which is untrusted input (its digest only proves it is what
was published): every entry must name a regular file inside the prefix, reached through
no symlink, or the layer is refused before any file is rewritten.
"""

import io
import json
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from podenv.errors import PodenvError, UnsafeArchiveError
from podenv.layout import RELOCATIONS_FILE

_WORKERS = 16
# Bytes of a file read at a time while relocating it: memory is 16 workers x a few of these.
_CHUNK = 1 << 20
_MODES = ("text", "binary")
# A real list has one short entry per file with a placeholder: tens of thousands at most.
_LIST_LIMIT = 64 << 20


class RelocationError(PodenvError):
    """A file of the environment cannot be moved to the new prefix."""


@dataclass(frozen=True)
class Relocation:
    path: str
    placeholder: str
    mode: str


def _refuse(what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"the env layer's relocation list ({RELOCATIONS_FILE}) {what}; refusing to install it"
    )


def _read_list(prefix: Path) -> bytes | None:
    try:
        descriptor = os.open(prefix / RELOCATIONS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:
        raise _refuse("is not a regular file") from None
    with os.fdopen(descriptor, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _refuse("is not a regular file")
        if info.st_size > _LIST_LIMIT:
            raise _refuse(f"is {info.st_size} bytes, over the {_LIST_LIMIT} a list may be")
        return stream.read()


def _check_entry(prefix: Path, entry: object) -> Relocation:
    if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(part, str) for part in entry)):
        raise _refuse(f"has an entry that is not [path, placeholder, mode]: {str(entry)[:80]!r}")
    path, placeholder, mode = entry
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise _refuse(f"names '{path[:200]}', which is not a plain path inside the env")
    if mode not in _MODES or not placeholder:
        raise _refuse(f"gives '{path[:200]}' mode '{mode[:20]}' or an empty placeholder")
    # Every directory on the way and the file itself must be what they seem: no symlink
    # may lead the rewrite elsewhere, and only a regular file is read (a fifo would hang).
    current = prefix
    for index, part in enumerate(parts):
        current = current / part
        try:
            info = current.lstat()
        except OSError:
            raise _refuse(f"names '{path[:200]}', which the layer does not hold") from None
        last = index == len(parts) - 1
        if not (stat.S_ISREG(info.st_mode) if last else stat.S_ISDIR(info.st_mode)):
            raise _refuse(f"names '{path[:200]}', which is not a regular file reached without links")
    return Relocation(path, placeholder, mode)


def read_relocations(prefix: Path) -> list[Relocation]:
    """The env's relocation list, each entry checked; [] if the env has none."""
    data = _read_list(prefix)
    if data is None:
        return []
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise _refuse("is not valid JSON") from None
    entries = document.get("prefixes") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _refuse("is not an object with a 'prefixes' list")
    return [_check_entry(prefix, entry) for entry in entries]


class _Relocator:
    """Copies ``source`` to ``target`` with the placeholder replaced, ``_CHUNK`` bytes at a time:
    memory is bounded by a constant, whatever the file's size. Only whole occurrences are
    replaced, so the last ``len(placeholder) - 1`` bytes of a chunk wait for the next one.

    Binary mode, conda's rule: the placeholder and the rest of its NUL-terminated string
    become the new prefix, the rest, and NULs up to the old length. The string may run on
    across chunks; a string that never ends (no NUL before the end of the file) is left as
    it was, which the output's equal length makes a copy from its start."""

    def __init__(self, source: BinaryIO, target: BinaryIO, relocation: Relocation, new_prefix: str) -> None:
        self.source, self.target, self.relocation = source, target, relocation
        self.placeholder, self.new = relocation.placeholder.encode(), new_prefix.encode()
        self.binary = relocation.mode == "binary"
        self.string_start: int | None = None  # input offset of an unfinished binary string
        self.replaced = 0

    def run(self) -> int:
        """The number of occurrences replaced."""
        pending, base = b"", 0  # base: the input offset of data[0]
        while chunk := self.source.read(_CHUNK):
            data = pending + chunk
            done = self._scan(data, base)
            pending = data[done:]
            base += done
        self.target.write(pending)
        if self.string_start is not None:  # an unterminated string: as it was
            self.replaced -= 1
            self.source.seek(self.string_start)
            self.target.seek(self.string_start)
            shutil.copyfileobj(self.source, self.target, _CHUNK)
        return self.replaced

    def _scan(self, data: bytes, base: int) -> int:
        """Write out what of ``data`` is settled; returns how much (the rest waits)."""
        index = 0
        while True:
            if self.string_start is not None:
                end = data.find(b"\0", index)
                if end < 0:
                    self.target.write(data[index:])
                    return len(data)
                padding = len(self.placeholder) - len(self.new)
                self.target.write(data[index:end] + b"\0" * (padding + 1))
                self.string_start, index = None, end + 1
                continue
            found = data.find(self.placeholder, index)
            if found < 0:
                break
            self._check_length()
            self.target.write(data[index:found] + self.new)
            self.replaced += 1
            index = found + len(self.placeholder)
            if self.binary:
                self.string_start = base + found
        settled = max(index, len(data) - len(self.placeholder) + 1)
        self.target.write(data[index:settled])
        return settled

    def _check_length(self) -> None:
        if self.binary and len(self.new) > len(self.placeholder):
            raise RelocationError(
                f"{self.relocation.path} is binary and its placeholder is {len(self.placeholder)} bytes, "
                f"shorter than the new prefix ({len(self.new)} bytes); install under a shorter PODENV_ROOT."
            )


def relocated(data: bytes, relocation: Relocation, new_prefix: str) -> bytes:
    """``data`` (a file's bytes as packed) as it reads once relocated to ``new_prefix``."""
    target = io.BytesIO()
    if not _Relocator(io.BytesIO(data), target, relocation, new_prefix).run():
        return data
    return target.getvalue()


def relocate_file(prefix: Path, relocation: Relocation, new_prefix: str) -> bool:
    """Rewrite one file, streamed; returns whether it changed. The tree is private: the new
    file replaces the old by one rename."""
    path = prefix / relocation.path
    temporary = path.with_name(f".{path.name}.relocating")
    try:
        with (
            open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as source,
            open(temporary, "w+b") as target,
        ):
            changed = _Relocator(source, target, relocation, new_prefix).run() > 0
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if not changed:
        temporary.unlink()
        return False
    os.chmod(temporary, path.stat().st_mode)
    os.replace(temporary, path)
    return True


def relocate(prefix: Path, new_prefix: str) -> int:
    """Rewrite every recorded file of the env at ``prefix`` for ``new_prefix``; returns the count."""
    relocations = read_relocations(prefix)
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="podenv-relocate") as pool:
        changed = pool.map(lambda relocation: relocate_file(prefix, relocation, new_prefix), relocations)
        return sum(changed)
