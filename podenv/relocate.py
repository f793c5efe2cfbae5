"""Relocating an unpacked environment to the path it will live at, in-process and in parallel.

The env layer records, in ``conda-meta/podenv-relocations.json``, every file that holds a
prefix placeholder: conda packages' own placeholders (text or binary) and podenv's
placeholder for the build directory. Text files get the new prefix in place of the
placeholder; binary files get conda's treatment: within each NUL-terminated string the
placeholder is replaced and the string padded with NULs to its old length, so offsets in
the binary stay valid (which is why the new prefix must not be longer than the placeholder).
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from podenv.errors import PodenvError

RELOCATIONS_FILE = "conda-meta/podenv-relocations.json"
_WORKERS = 16


class RelocationError(PodenvError):
    """A file of the environment cannot be moved to the new prefix."""


@dataclass(frozen=True)
class Relocation:
    path: str
    placeholder: str
    mode: str


def read_relocations(prefix: Path) -> list[Relocation]:
    try:
        document = json.loads((prefix / RELOCATIONS_FILE).read_text())
    except FileNotFoundError:
        return []
    return [Relocation(*entry) for entry in document["prefixes"]]


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


def relocate_file(prefix: Path, relocation: Relocation, new_prefix: str) -> bool:
    """Rewrite one file; returns whether it changed. Writes in place (the tree is private)."""
    path = prefix / relocation.path
    data = path.read_bytes()
    placeholder = relocation.placeholder.encode()
    if placeholder not in data:
        return False
    if relocation.mode == "binary":
        data = _replace_binary(data, placeholder, new_prefix.encode(), relocation.path)
    else:
        data = data.replace(placeholder, new_prefix.encode())
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
