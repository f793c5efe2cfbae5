"""Build box: install exactly what pixi.lock pins into a prefix, then pack it as a layer.

Conda packages are linked by py-rattler (pixi's own engine, no link scripts), then the
lock's PyPI packages by uv from their locked URLs with their hashes. Byte-code is
compiled once here, in unchecked-hash mode with no absolute paths in it, so that the
layer is deterministic and a worker never writes ``__pycache__`` onto its volume.
"""

import asyncio
import base64
import csv
import hashlib
import io
import json
import mmap
import multiprocessing
import os
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from podenv.archive import ArchiveEntry
from podenv.errors import PodenvError
from podenv.layout import RELOCATIONS_FILE
from podenv.lock import InstallPlan, PypiPackage, conda_records, read_plan
from podenv.log import get_logger
from podenv.progress import Progress, human_bytes
from podenv.shards import ShardIndex, package_owners, write_sharded_layer

_log = get_logger("envbuild")
# Stands for the build directory in packed text files, until the worker relocates them.
BUILD_PREFIX_PLACEHOLDER = "/podenv-build-prefix-placeholder"
# Files in a built prefix that are not part of the environment: Snakemake's marker of a
# directory output, and the cache tag rattler writes into every prefix it links.
_BUILD_MARKERS = (".snakemake_timestamp", "CACHEDIR.TAG")
_REWRITTEN_BY_CONDA_PACK = ("bin/", "conda-meta/")
# Files larger than this are searched for the build prefix in place (mmap), not read.
_SEARCHED_IN_PLACE = 256 << 10


class EnvBuildError(PodenvError):
    """The environment could not be installed or packed."""


@dataclass(frozen=True)
class EnvInstall:
    prefix: Path
    plan: InstallPlan
    seconds: float


def _check_pypi_hashes(plan: InstallPlan, allow_unhashed: tuple[str, ...]) -> None:
    unhashed = [p.name for p in plan.pypi if p.sha256 is None and p.name not in allow_unhashed]
    if unhashed:
        raise EnvBuildError(
            f"the lock has PyPI packages without a hash ({', '.join(unhashed)}); "
            "lock them with hashes, or list them under allow_unhashed in the env YAML."
        )
    for package in plan.pypi:
        if package.kind != "wheel":
            _log.warning(
                f"{package.name} {package.version} is a {package.kind}, built at install time: "
                "its bytes may differ between builds",
                extra={"fields": {"package": package.name, "kind": package.kind}},
            )


class _DownloadReporter:
    """rattler's installer callbacks, turned into our byte progress lines."""

    def __init__(self, total: int | None) -> None:
        self.progress = Progress("download conda packages", total=total)
        self._seen: dict[int, int] = {}
        self.linked = 0

    def on_download_progress(self, download_idx: int, progress: int, total: int | None) -> None:
        self.progress.update(progress - self._seen.get(download_idx, 0))
        self._seen[download_idx] = progress

    def on_link_complete(self, index: int) -> None:
        self.linked += 1


def _install_conda(plan: InstallPlan, lock_path: Path, prefix: Path, cache_dir: Path) -> None:
    from rattler import InstallerReporter, install

    records = conda_records(lock_path, plan.environment, plan.platform)
    reporter = _DownloadReporter(sum(p.size or 0 for p in plan.conda) or None)
    _log.info(f"linking {len(records)} conda packages into {prefix}")
    asyncio.run(
        install(
            records,
            target_prefix=prefix,
            cache_dir=cache_dir / "pkgs",
            execute_link_scripts=False,
            # rattler calls the callbacks a reporter has; its Protocol lists every one.
            reporter=cast("InstallerReporter", reporter),
        )
    )
    summary = reporter.progress.finish()
    _log.info(
        f"linked {reporter.linked} conda packages; downloaded {human_bytes(summary.done)} "
        f"in {summary.seconds:.1f}s",
        extra={"fields": {"packages": reporter.linked, "downloaded_bytes": summary.done}},
    )


def _requirement_line(package: PypiPackage) -> str:
    line = f"{package.name} @ {package.location}"
    return f"{line} --hash=sha256:{package.sha256}" if package.sha256 else line


def _install_pypi(plan: InstallPlan, prefix: Path, cache_dir: Path) -> None:
    if not plan.pypi:
        return
    from uv import find_uv_bin

    requirements = prefix.parent / f".{prefix.name}.requirements.txt"
    requirements.write_text("".join(_requirement_line(p) + "\n" for p in plan.pypi))
    all_hashed = all(p.sha256 for p in plan.pypi)
    command = [find_uv_bin(), "pip", "install", "--no-config", "--no-deps", "--link-mode", "copy"]
    command += ["--python", str(prefix / "bin" / "python"), "--cache-dir", str(cache_dir / "uv")]
    command += ["--require-hashes" if all_hashed else "--verify-hashes", "-r", str(requirements)]
    _log.info(f"installing {len(plan.pypi)} PyPI packages with uv")
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        requirements.unlink(missing_ok=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvBuildError(f"uv could not install the lock's PyPI packages: {last}")


def _compile_bytecode(prefix: Path) -> None:
    """Replace whatever byte-code the installers wrote with deterministic, path-free byte-code."""
    for cache in sorted(prefix.rglob("__pycache__")):
        shutil.rmtree(cache)
    python = prefix / "bin" / "python"
    if not python.exists():
        return
    command = [str(python), "-m", "compileall", "-q", "-j", "1", "--invalidation-mode", "unchecked-hash"]
    command += ["-s", str(prefix), "-p", "/", "-x", r"/(test|tests)/", str(prefix)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode not in (0, 1):  # 1: some file did not compile (py2 leftovers); harmless
        raise EnvBuildError(f"compiling byte-code failed: {result.stderr.strip()[-300:]}")


def install_env(
    lock_path: Path,
    environment: str,
    platform: str,
    prefix: Path,
    cache_dir: Path,
    allow_unhashed: tuple[str, ...] = (),
) -> EnvInstall:
    """Install the locked environment into ``prefix`` (which must not exist): whole or absent."""
    started = time.monotonic()
    plan = read_plan(lock_path, environment, platform)
    _check_pypi_hashes(plan, allow_unhashed)
    if prefix.exists():
        raise EnvBuildError(f"{prefix} exists already; remove it to rebuild the environment.")
    try:
        _install_conda(plan, lock_path, prefix, cache_dir)
        _install_pypi(plan, prefix, cache_dir)
        _compile_bytecode(prefix)
    except BaseException:
        shutil.rmtree(prefix, ignore_errors=True)
        raise
    return EnvInstall(prefix, plan, time.monotonic() - started)


def sbom(plan: InstallPlan) -> dict[str, list[dict[str, Any]]]:
    """The packages of the env, for the release manifest."""
    conda = [
        {"name": p.name, "version": p.version, "build": p.build, "url": p.url, "sha256": p.sha256}
        for p in plan.conda
    ]
    pypi = [{"name": p.name, "version": p.version, "url": p.location, "sha256": p.sha256} for p in plan.pypi]
    return {"conda": conda, "pypi": pypi}


class _EntryCollector:
    """Receives conda-pack's packing calls and keeps them as archive entries.

    conda-pack decides what goes into the archive (conda-managed files from the package
    cache with their original prefix placeholders, unmanaged files from the prefix, its
    activate and conda-unpack scripts); our deterministic writer decides how.

    Text that holds the build prefix (scripts uv wrote, conda-pack's own records) gets
    ``BUILD_PREFIX_PLACEHOLDER`` instead, so the layer does not depend on where it was built.
    Rewritten contents are kept in memory; unchanged files are kept as paths. Unmanaged files
    (what uv installed: most of an env) are searched for the prefix by a pool of processes,
    once conda-pack has named them all (`scan_unmanaged`).
    """

    def __init__(self, build_prefix: str) -> None:
        self.entries: dict[str, ArchiveEntry] = {}
        self.holding_prefix: set[str] = set()
        self.unmanaged_relocations: list[tuple[str, str, str]] = []
        self._unmanaged: list[tuple[str, str]] = []
        self._build_prefix = build_prefix

    def add(self, source: str, target: str) -> None:
        path = Path(source)
        if path.is_symlink():
            entry = ArchiveEntry(target, "symlink", link_target=str(path.readlink()))
        elif path.is_dir():
            entry = ArchiveEntry(target, "dir")
        else:
            entry = ArchiveEntry(target, "file", source=path, executable=_is_executable(path))
        self.entries[target] = entry

    def add_bytes(self, source: str, data: bytes, target: str) -> None:
        path = Path(source)
        executable = _is_executable(path)
        verdict, data = _with_placeholder(data, self._build_prefix.encode())
        if verdict == _HOLDS_PREFIX_AS_TEXT:
            self.holding_prefix.add(target)
        elif not target.startswith(_REWRITTEN_BY_CONDA_PACK):
            # Elsewhere conda-pack hands over the file's own bytes (it rewrites only shebangs
            # in bin/ and its records in conda-meta/): the writer reads them from disk later.
            self.entries[target] = ArchiveEntry(target, "file", source=path, executable=executable)
            return
        self.entries[target] = ArchiveEntry(target, "file", data=data, executable=executable)

    def add_unmanaged(self, source: str, target: str) -> None:
        self._unmanaged.append((source, target))

    def scan_unmanaged(self, jobs: int) -> None:
        """Every unmanaged file as an entry: kept as its path, or as its text with the
        placeholder (and a relocation) where it held the build prefix."""
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            jobs, context, initializer=_receive_prefix, initargs=(self._build_prefix,)
        ) as pool:
            scanned = pool.map(_scan_unmanaged, [source for source, _ in self._unmanaged], chunksize=512)
            for (source, target), (executable, verdict, data) in zip(self._unmanaged, scanned, strict=True):
                if verdict == _HOLDS_PREFIX_AS_TEXT:
                    self.holding_prefix.add(target)
                    self.unmanaged_relocations.append((target, self._build_prefix, "text"))
                    self.entries[target] = ArchiveEntry(target, "file", data=data, executable=executable)
                    continue
                if verdict == _HOLDS_PREFIX_AS_BINARY:
                    _log.warning(f"{target} is binary and holds the build prefix; it cannot be relocated")
                self.entries[target] = ArchiveEntry(
                    target, "file", source=Path(source), executable=executable
                )
        self._unmanaged = []

    def add_text(self, target: str, text: str, executable: bool) -> None:
        text = text.replace(self._build_prefix, BUILD_PREFIX_PLACEHOLDER)
        self.entries[target] = ArchiveEntry(target, "file", data=text.encode(), executable=executable)

    def relocations(self, records: list[tuple[str, str, str]]) -> list[list[str]]:
        """conda-pack's prefix records, less unmanaged files that never held the prefix."""
        kept = []
        for target, placeholder, mode in sorted(records):
            if placeholder == self._build_prefix:
                if target not in self.holding_prefix:
                    continue
                placeholder = BUILD_PREFIX_PLACEHOLDER
            kept.append([target, placeholder, mode])
        return kept


def _packer_class() -> type:
    from conda_pack.core import Packer

    class _Packer(Packer):
        """conda-pack writes its generated scripts to temporary files it deletes at once;
        our writer reads later, so generated text goes to the collector as bytes."""

        def _write_text_file(self, fpath: str, ftext: str, executable: bool = False) -> None:
            self.archive.add_text(fpath, ftext, executable)

        def add(self, file: Any) -> None:
            # An unmanaged file (installed by uv) needs relocating only if it holds the build
            # prefix: one byte search, instead of conda-pack's decode of every file as text.
            unmanaged = file.file_mode == "unknown" and not file.target.startswith(_REWRITTEN_BY_CONDA_PACK)
            if unmanaged and os.path.isfile(file.source) and not os.path.islink(file.source):
                self.archive.add_unmanaged(file.source, file.target)
                return
            super().add(file)

    return _Packer


_HOLDS_PREFIX_AS_TEXT, _HOLDS_PREFIX_AS_BINARY = "text", "binary"
_scanned_prefix = b""


def _receive_prefix(build_prefix: str) -> None:
    global _scanned_prefix
    _scanned_prefix = build_prefix.encode()


def _with_placeholder(data: bytes, build_prefix: bytes) -> tuple[str | None, bytes]:
    """Whether ``data`` holds the build prefix (None: no), as text or in a binary (which cannot
    be relocated); and ``data``, with the placeholder for the prefix where it is text."""
    from conda_pack.core import is_binary_file

    if build_prefix not in data:
        return None, data
    if is_binary_file(data):
        return _HOLDS_PREFIX_AS_BINARY, data
    return _HOLDS_PREFIX_AS_TEXT, data.replace(build_prefix, BUILD_PREFIX_PLACEHOLDER.encode())


def _scan_unmanaged(source: str) -> tuple[bool, str | None, bytes | None]:
    """(executable, verdict, the text with the placeholder) of one unmanaged file, in a pool
    process; the verdict is `_with_placeholder`'s."""
    status = os.stat(source)
    executable = bool(status.st_mode & 0o111)
    with open(source, "rb") as stream:
        if status.st_size > _SEARCHED_IN_PLACE:
            # Most of an env's bytes: searched in place, never copied into this process.
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if mapped.find(_scanned_prefix) < 0:
                    return executable, None, None
        data = stream.read()
    verdict, text = _with_placeholder(data, _scanned_prefix)
    return executable, verdict, text if verdict == _HOLDS_PREFIX_AS_TEXT else None


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o111)


def _record_hash(data: bytes) -> str:
    """A RECORD's hash field: sha256, urlsafe base64 without padding (the wheel spec)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _record_what_the_layer_holds(entries: dict[str, ArchiveEntry], holding_prefix: set[str]) -> None:
    """A wheel's RECORD lists each file's hash; a script whose build prefix became the
    placeholder gets the hash and size of what the layer holds, so the RECORD (and its
    package's shard) is the same wherever the env was built."""
    for name, entry in list(entries.items()):
        if not name.endswith(".dist-info/RECORD") or entry.kind != "file":
            continue
        site = name.rsplit("/", 2)[0]
        original = entry.data if entry.data is not None else cast(Path, entry.source).read_bytes()
        rows = list(csv.reader(io.StringIO(original.decode("utf-8", "surrogateescape"))))
        changed = False
        for row in rows:
            held = entries.get(os.path.normpath(f"{site}/{row[0]}")) if len(row) == 3 else None
            if held is not None and held.name in holding_prefix and held.data is not None:
                row[1:] = [_record_hash(held.data), str(len(held.data))]
                changed = True
        if changed:
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            data = text.getvalue().encode("utf-8", "surrogateescape")
            entries[name] = ArchiveEntry(name, "file", data=data, executable=entry.executable)


def _drop_byte_code_of_rewritten_sources(entries: dict[str, ArchiveEntry], holding_prefix: set[str]) -> None:
    """A source that held the build prefix (a `scripts=` file such as bin/jp.py) was compiled
    from its build-directory text: its unchecked-hash byte-code embeds that text's hash, so it
    would tie its shard to where the env was built. Python compiles such a file when imported."""
    for source in holding_prefix:
        if source.endswith(".py"):
            directory, _, stem = source[: -len(".py")].rpartition("/")
            cache = f"{directory}/__pycache__/{stem}." if directory else f"__pycache__/{stem}."
            for name in [name for name in entries if name.startswith(cache) and name.endswith(".pyc")]:
                del entries[name]


def env_entries(prefix: Path) -> dict[str, ArchiveEntry]:
    """What conda-pack would pack from ``prefix``, as our writer's entries, with the relocation list."""
    import conda_pack

    build_prefix = str(prefix.resolve())
    try:
        env = conda_pack.CondaEnv.from_prefix(build_prefix)
    except conda_pack.CondaPackException as error:
        raise EnvBuildError(f"conda-pack refused {prefix}: {' '.join(str(error).split())}") from None
    for marker in _BUILD_MARKERS:
        env = env.exclude(marker)
    collector = _EntryCollector(build_prefix)
    packer = _packer_class()(build_prefix, collector)
    for file in env.files:
        packer.add(file)
    collector.scan_unmanaged(os.cpu_count() or 1)
    packer.finish()
    _record_what_the_layer_holds(collector.entries, collector.holding_prefix)
    _drop_byte_code_of_rewritten_sources(collector.entries, collector.holding_prefix)
    relocations = {
        "placeholder": BUILD_PREFIX_PLACEHOLDER,
        "prefixes": collector.relocations([*packer.prefixes, *collector.unmanaged_relocations]),
    }
    collector.entries[RELOCATIONS_FILE] = ArchiveEntry(
        RELOCATIONS_FILE, "file", data=json.dumps(relocations, indent=1).encode()
    )
    return collector.entries


def pack_env(prefix: Path, output: Path) -> ShardIndex:
    """Pack ``prefix`` (conda-pack's file selection) as a package-sharded layer in ``output``."""
    entries = env_entries(prefix)
    started = time.monotonic()
    index = write_sharded_layer(entries.values(), package_owners(prefix), output)
    _log.info(
        f"packed {output.name}: {len(index.shards)} shards, {human_bytes(index.size)} from "
        f"{human_bytes(index.unpacked_size)} in {index.files} files, {index.digest}, "
        f"{time.monotonic() - started:.1f}s",
        extra={"fields": {"digest": index.digest, "size": index.size, "shards": len(index.shards)}},
    )
    return index
