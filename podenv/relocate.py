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

import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from podenv.errors import PodenvError, UnsafeArchiveError
from podenv.layout import RELOCATIONS_FILE

_WORKERS = 16
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


def _replace_binary(data: bytes, placeholder: bytes, new_prefix: bytes, path: str) -> bytes:
    if len(new_prefix) > len(placeholder):
        raise RelocationError(
            f"{path} is binary and its placeholder is {len(placeholder)} bytes, shorter than the "
            f"new prefix ({len(new_prefix)} bytes); install under a shorter PODENV_ROOT."
        )
    pattern = re.compile(re.escape(placeholder) + rb"([^\0]*?)\0")

    def padded(match: re.Match[bytes]) -> bytes:
        replaced = new_prefix + match.group(1)
        return replaced + b"\0" * (len(match.group(0)) - len(replaced))

    return pattern.sub(padded, data)


def relocated(data: bytes, relocation: Relocation, new_prefix: str) -> bytes:
    """``data`` (a file's bytes as packed) as it reads once relocated to ``new_prefix``."""
    placeholder = relocation.placeholder.encode()
    if placeholder not in data:
        return data
    if relocation.mode == "binary":
        return _replace_binary(data, placeholder, new_prefix.encode(), relocation.path)
    return data.replace(placeholder, new_prefix.encode())


def relocate_file(prefix: Path, relocation: Relocation, new_prefix: str) -> bool:
    """Rewrite one file; returns whether it changed. Writes in place (the tree is private)."""
    path = prefix / relocation.path
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as stream:
        original = stream.read()
    data = relocated(original, relocation, new_prefix)
    if data is original:
        return False
    mode = path.stat().st_mode
    temporary = path.with_name(f".{path.name}.relocating")
    temporary.write_bytes(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    return True


def relocate(prefix: Path, new_prefix: str) -> int:
    """Rewrite every recorded file of the env at ``prefix`` for ``new_prefix``; returns the count."""
    relocations = read_relocations(prefix)
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="podenv-relocate") as pool:
        changed = pool.map(lambda relocation: relocate_file(prefix, relocation, new_prefix), relocations)
        return sum(changed)
