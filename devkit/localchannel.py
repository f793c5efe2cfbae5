"""A local conda channel, built with the conda package format's own tooling.

podenv installs the conda half of an environment from a pixi.lock with py-rattler and packs it
with conda-pack. Tests and the local demo need real conda packages for that, but no conda
channel can be reached from here. So this module builds genuine ``.conda`` files with
conda-package-handling (``info/index.json``, ``info/paths.json`` with prefix placeholders,
``info/files``, ``info/has_prefix``), indexes them with rattler's own indexer, and reads the
records back as a lock file would carry them.

The one interpreter package it offers repackages Debian's ``/usr/bin/python3.11`` (libpython
linked in statically) with its standard library, which runs from any prefix. Being Debian's
build, it installs into ``<prefix>/local/lib/python3.11/dist-packages`` and also reads
``<prefix>/lib/python3/dist-packages``; it knows nothing of ``lib/python3.11/site-packages``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conda_package_handling import api as cph_api
from rattler import Channel, MatchSpec, RepoData, RepoDataRecord
from rattler.index import index_fs

from podenv.errors import PodenvError
from podenv.fileio import read_file_chunks

PREFIX_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
SUBDIRS = ("linux-64", "noarch")
# The ZIP epoch: the earliest time a zip entry can carry, and what cph gives its inner entries.
PACKAGE_MTIME = 315532800
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Level 19 (cph's default) takes seconds per megabyte; tests build the interpreter often.
DEFAULT_COMPRESSION_LEVEL = 3

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
DEBIAN_STDLIB = Path("/usr/lib/python3.11")
PYTHON_PREFIX_FILE = "lib/python3.11/podenv-prefix.txt"
# Debian's site.py reads this directory under any prefix; lib/python3.11/site-packages it ignores.
DEBIAN_DIST_PACKAGES = "lib/python3/dist-packages"
# EXTERNALLY-MANAGED would make uv and pip refuse the prefix. config-3.11-* holds the static
# libpython (24 MB) and a link out of the prefix; sitecustomize.py links into /etc.
_STDLIB_SKIPPED_NAMES = frozenset(
    {
        "EXTERNALLY-MANAGED",
        "__pycache__",
        "config-3.11-x86_64-linux-gnu",
        "sitecustomize.py",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
    }
)


@dataclass(frozen=True)
class Symlink:
    """A symbolic link in a package; ``target`` is the link text, relative to the link's folder."""

    target: str


FileSource = bytes | Path | Symlink


@dataclass
class CondaPackageSpec:
    """What one conda package holds. ``files`` maps prefix-relative paths to their content.

    ``executables`` names files to install with mode 0755 (a ``Path`` source that is executable
    is so too). ``has_prefix_text`` names text files that contain ``PREFIX_PLACEHOLDER``, which
    an installer replaces with the real prefix.
    """

    name: str
    version: str
    build: str = "0"
    build_number: int = 0
    subdir: str = "linux-64"
    depends: list[str] = field(default_factory=list)
    files: Mapping[str, FileSource] = field(default_factory=dict)
    executables: frozenset[str] = frozenset()
    has_prefix_text: frozenset[str] = frozenset()
    license: str = "MIT"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.conda"


def build_package(
    spec: CondaPackageSpec, channel_dir: Path, compression_level: int = DEFAULT_COMPRESSION_LEVEL
) -> Path:
    """Write ``spec`` as ``channel_dir/<subdir>/<name>-<version>-<build>.conda``; same spec, same bytes."""
    _check_spec(spec)
    out_dir = Path(channel_dir) / spec.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="podenv-pkg-") as scratch:
        staging = Path(scratch) / "staging"
        payload = _stage_payload(spec, staging)
        info = _write_info(spec, staging, payload)
        _pin_mtimes(staging)
        built = Path(scratch) / spec.filename
        # The zip and tar members go in the order given; sorted keeps the bytes stable.
        cph_api.create(str(staging), payload + info, str(built), compression_level=compression_level)
        final = out_dir / spec.filename
        _normalise_zip(built, final)
    return final


def build_channel(channel_dir: Path, specs: Iterable[CondaPackageSpec]) -> str:
    """Build every package into ``channel_dir``, index it with rattler, and return its ``file://`` URL."""
    channel_dir = Path(channel_dir).resolve()
    for subdir in SUBDIRS:
        # A conda channel must have noarch/repodata.json even when noarch holds nothing.
        (channel_dir / subdir).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        build_package(spec, channel_dir)
    # Plain repodata.json is all a file channel needs; shards and .zst only add files.
    asyncio.run(index_fs(channel_dir, write_zst=False, write_shards=False, force=True))
    return channel_url(channel_dir)


def channel_url(channel_dir: Path) -> str:
    return Path(channel_dir).resolve().as_uri()


def locked_records(channel_dir: Path, specs: Iterable[str]) -> list[RepoDataRecord]:
    """The one indexed record matching each spec (``name`` or ``name ==version``), in order,
    as a lock file carries it."""
    channel_dir = Path(channel_dir).resolve()
    channel = Channel(channel_url(channel_dir))
    by_name: dict[str, list[RepoDataRecord]] = {}
    for subdir in SUBDIRS:
        repodata = channel_dir / subdir / "repodata.json"
        if repodata.exists():
            for record in RepoData.from_path(repodata).into_repo_data(channel):
                by_name.setdefault(record.name.normalized, []).append(record)
    return [_one_record(by_name, spec) for spec in specs]


def relocatable_python_spec(
    version: str | None = None,
    build: str = "debian_0",
    interpreter: Path = DEBIAN_PYTHON,
    stdlib: Path = DEBIAN_STDLIB,
) -> CondaPackageSpec:
    """The ``python`` package: Debian's interpreter and a trimmed standard library.

    It also carries a text file holding the prefix placeholder and a ``#!`` script into the
    prefix, so that relocation by the installer and by conda-unpack is exercised.
    """
    if not interpreter.is_file() or not stdlib.is_dir():
        raise PodenvError(
            f"the local channel packs Debian's CPython ({interpreter} and {stdlib}), which this "
            "machine lacks; on Debian 12 install it with `apt-get install python3.11`."
        )
    files: dict[str, FileSource] = {
        "bin/python3.11": interpreter,
        "bin/python3": Symlink("python3.11"),
        "bin/python": Symlink("python3.11"),
        "bin/pydoc3.11": f"#!{PREFIX_PLACEHOLDER}/bin/python3.11\nimport pydoc\npydoc.cli()\n".encode(),
        PYTHON_PREFIX_FILE: f"prefix={PREFIX_PLACEHOLDER}\n".encode(),
    }
    files.update(_stdlib_files(stdlib))
    return CondaPackageSpec(
        name="python",
        version=version or _interpreter_version(interpreter),
        build=build,
        files=files,
        executables=frozenset({"bin/python3.11", "bin/pydoc3.11"}),
        has_prefix_text=frozenset({"bin/pydoc3.11", PYTHON_PREFIX_FILE}),
        license="PSF-2.0",
    )


def module_package_spec(name: str, version: str, module_source: str, build: str = "0") -> CondaPackageSpec:
    """A package with one pure module ``<name>.py`` that the Debian python above imports."""
    return CondaPackageSpec(
        name=name,
        version=version,
        build=build,
        depends=["python 3.11.*"],
        files={f"{DEBIAN_DIST_PACKAGES}/{name}.py": module_source.encode()},
    )


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    for chunk in read_file_chunks(path):
        hasher.update(chunk)
    return hasher.hexdigest()


def _check_spec(spec: CondaPackageSpec) -> None:
    if spec.subdir not in SUBDIRS:
        raise ValueError(f"subdir {spec.subdir!r} is not one of {SUBDIRS}")
    for path in spec.files:
        if path.startswith(("/", "info/")) or ".." in Path(path).parts:
            raise ValueError(f"{path!r} is not a relative path outside info/")
    for path, source in spec.files.items():
        if isinstance(source, Symlink) and source.target.startswith("/"):
            raise ValueError(f"{path!r} links to the absolute {source.target!r}, outside any prefix")
    for path in spec.executables | spec.has_prefix_text:
        if path not in spec.files or isinstance(spec.files[path], Symlink):
            raise ValueError(f"{path!r} is marked but is not a regular file of the package")
    for path in spec.has_prefix_text:
        if PREFIX_PLACEHOLDER.encode() not in _content(spec.files[path]):
            raise ValueError(f"{path!r} is marked as holding the prefix but does not contain it")


def _content(source: FileSource) -> bytes:
    if isinstance(source, Symlink):
        return b""
    return source.read_bytes() if isinstance(source, Path) else source


def _stage_payload(spec: CondaPackageSpec, staging: Path) -> list[str]:
    for rel, source in sorted(spec.files.items()):
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Symlink):
            target.symlink_to(source.target)
            continue
        if isinstance(source, Path):
            # A copy, never a hard link: tar would record a second link as a link entry.
            shutil.copyfile(source, target)
        else:
            target.write_bytes(source)
        executable = rel in spec.executables or (isinstance(source, Path) and _is_executable(source))
        target.chmod(0o755 if executable else 0o644)
    return sorted(spec.files)


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def _write_info(spec: CondaPackageSpec, staging: Path, payload: list[str]) -> list[str]:
    info_dir = staging / "info"
    info_dir.mkdir()
    documents = {
        "info/index.json": _json(_index_json(spec)),
        "info/paths.json": _json(
            {"paths": [_paths_entry(spec, staging, rel) for rel in payload], "paths_version": 1}
        ),
        "info/files": "".join(f"{rel}\n" for rel in payload),
    }
    if spec.has_prefix_text:
        # Read by conda-pack (and old conda) only where info/paths.json is missing.
        documents["info/has_prefix"] = "".join(
            f"{PREFIX_PLACEHOLDER} text {rel}\n" for rel in sorted(spec.has_prefix_text)
        )
    for rel, text in documents.items():
        (staging / rel).write_text(text)
        (staging / rel).chmod(0o644)
    return sorted(documents)


def _json(document: object) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _index_json(spec: CondaPackageSpec) -> dict[str, object]:
    index: dict[str, object] = {
        "name": spec.name,
        "version": spec.version,
        "build": spec.build,
        "build_number": spec.build_number,
        "depends": list(spec.depends),
        "license": spec.license,
        "subdir": spec.subdir,
    }
    if spec.subdir == "noarch":
        index["noarch"] = "generic"
    else:
        index.update(arch="x86_64", platform="linux")
    return index


def _paths_entry(spec: CondaPackageSpec, staging: Path, rel: str) -> dict[str, object]:
    path = staging / rel
    entry: dict[str, object] = {"_path": rel}
    if path.is_symlink():
        entry["path_type"] = "softlink"
        # Like conda-build, a link that resolves inside the package records its target's digest.
        if not path.exists():
            return entry
    else:
        entry["path_type"] = "hardlink"
    entry["sha256"] = file_sha256(path)
    entry["size_in_bytes"] = path.stat().st_size
    if rel in spec.has_prefix_text:
        entry.update(prefix_placeholder=PREFIX_PLACEHOLDER, file_mode="text")
    return entry


def _pin_mtimes(staging: Path) -> None:
    # Tar members keep the staged files' mtimes; pin them so that the bytes do not depend on when.
    for path in staging.rglob("*"):
        os.utime(path, (PACKAGE_MTIME, PACKAGE_MTIME), follow_symlinks=False)


def _normalise_zip(built: Path, final: Path) -> None:
    """Copy cph's outer zip with every entry dated ZIP_EPOCH.

    cph stamps ``metadata.json`` with the wall clock (``ZipFile.writestr`` with a name), which
    alone makes two builds of one spec differ; its other entries already carry the epoch.
    """
    partial = final.with_name(final.name + ".partial")
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as sink:
        for member in source.infolist():
            entry = zipfile.ZipInfo(member.filename, date_time=ZIP_EPOCH)
            entry.external_attr = member.external_attr
            sink.writestr(entry, source.read(member))
    os.replace(partial, final)


def _stdlib_files(stdlib: Path) -> dict[str, FileSource]:
    files: dict[str, FileSource] = {}
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIPPED_NAMES)
        for name in names + [d for d in dirs if (Path(root) / d).is_symlink()]:
            if name in _STDLIB_SKIPPED_NAMES:
                continue
            source = Path(root) / name
            rel = f"lib/python3.11/{source.relative_to(stdlib).as_posix()}"
            files[rel] = Symlink(os.readlink(source)) if source.is_symlink() else source
    return files


def _interpreter_version(interpreter: Path) -> str:
    result = subprocess.run(
        [str(interpreter), "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def _one_record(by_name: dict[str, list[RepoDataRecord]], spec: str) -> RepoDataRecord:
    match_spec = MatchSpec(spec)
    candidates = by_name.get(spec.split()[0], [])
    records = [record for record in candidates if match_spec.matches(record)]
    if len(records) != 1:
        found = ", ".join(r.file_name for r in candidates) or "none"
        raise ValueError(f"expected one package matching {spec!r} in the channel, found {found}")
    return records[0]
