"""The release's `code` layer: the handler and its plugins (the ``worker`` package), packed
with the deterministic writer, so that a release carries the code that serves it and a
rollback restores code, env and models together. The worker image keeps only the bootstrap.

What goes in is the package's source files, named ``worker/...`` (the layer directory is the
handler's ``PYTHONPATH``). What a checkout adds by itself never goes in, so the digest is the
same from every checkout of the same commit: bytecode caches, hidden files, and the exec bit
(a module needs none; a checkout with ``core.fileMode=false`` would differ). The image's own
files (the Dockerfile, its requirements and start.sh) stay out: they are the bootstrap.
"""

from pathlib import Path

from podenv.archive import ArchiveEntry, ArchiveInfo, write_archive
from podenv.errors import PodenvError

PACKAGE = "worker"
# The bootstrap image's files: they live in worker/ but belong to the image, not a release.
IMAGE_FILES = frozenset({"Dockerfile", "Dockerfile.dockerignore", "requirements.txt", "start.sh"})
_SKIPPED_DIRECTORIES = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _wanted(relative: Path) -> bool:
    if any(part.startswith(".") or part in _SKIPPED_DIRECTORIES for part in relative.parts):
        return False
    if len(relative.parts) == 1 and relative.name in IMAGE_FILES:
        return False
    return not relative.name.endswith(_SKIPPED_SUFFIXES)


def code_files(source: Path) -> list[Path]:
    """The files of the code layer below ``source`` (the worker package's directory), sorted."""
    if not (source / "__init__.py").is_file():
        raise PodenvError(f"{source} is not a Python package (no __init__.py): the code layer packs one.")
    files = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not _wanted(relative):
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise PodenvError(f"cannot pack '{path}' into the code layer: only files and directories go in.")
        if path.is_file():
            files.append(path)
    return files


def code_entries(source: Path) -> list[ArchiveEntry]:
    """The layer's entries: every wanted file as ``worker/<path>`` (mode 0644), and its directories."""
    entries: dict[str, ArchiveEntry] = {}
    for path in code_files(source):
        name = (Path(PACKAGE) / path.relative_to(source)).as_posix()
        entries[name] = ArchiveEntry(name, "file", source=path)
        for parent in Path(name).parents:
            if parent != Path("."):
                entries.setdefault(parent.as_posix(), ArchiveEntry(parent.as_posix(), "dir"))
    return list(entries.values())


def pack_code(source: Path, output: Path) -> ArchiveInfo:
    """Pack the worker package at ``source`` as the code layer's tar.zst at ``output``."""
    return write_archive(code_entries(source), output)
