"""The layout of podenv on a worker's volume, and the leases that save duplicate work.

    <root>/layers/<hex>/                 one extracted layer, complete with its marker, or absent
    <root>/releases/<name>/<version>/    release.json, the env link and the model cache views
    <root>/staging/                      private work in progress, one directory per installer
    <root>/leases/<hex>.lease            who is installing a layer, with a heartbeat (mtime)
    <root>/in-use/<name>/<version>/<host>.<pid>   a running worker's release, with a heartbeat
    <root>/blobs/<hex>                   the blob cache (podenv.blobcache): every shard of a sharded layer,
                                         and old-format layers with --keep-blobs
    <root>/boot-reports/                 one JSON per boot
    <root>/channels/<name>/<channel>.json   the last channel pointer seen, for offline boots
    <root>/manifests/<name>/<version>.json  a release manifest `podenv warm` put there (used
                                         only when its bytes have the pinned digest)

Correctness never rests on a lease (flock lies on some network filesystems, and a lease
can go stale): everything is built in a private staging directory and appears by one
atomic rename, with its marker already inside. A lease only keeps a second worker from
downloading what the first is downloading.
"""

import json
import os
import re
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podenv.digests import DIGEST_PATTERN, digest_hex
from podenv.names import NAME_PATTERN, VERSION_PATTERN
from podenv.settings import ROOT

MARKER = ".podenv-layer.json"
RELEASE_MARKER = ".podenv-release.json"
DEFAULT_ROOT = ROOT.default

# Another mount of a network volume can see a rename up to about a second late (weed mount's
# name cache, issue 13): readers look again this long before they treat a name as absent.
VISIBILITY_GRACE = 3.0


@dataclass(frozen=True)
class Volume:
    root: Path

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def in_use(self) -> Path:
        return self.root / "in-use"

    @property
    def installing(self) -> Path:
        return self.root / "installing"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def reports(self) -> Path:
        return self.root / "boot-reports"

    def layer_dirs(self) -> list[Path]:
        """Installed layer directories; names starting with '.' are trash being deleted."""
        if not self.layers.is_dir():
            return []
        return sorted(path for path in self.layers.iterdir() if not path.name.startswith("."))

    def layer_dir(self, digest: str) -> Path:
        return self.layers / digest_hex(digest)

    def release_dir(self, name: str, version: str) -> Path:
        return self.root / "releases" / name / version

    def channel_cache(self, name: str, channel: str) -> Path:
        return self.root / "channels" / name / f"{channel}.json"

    def manifest_path(self, name: str, version: str) -> Path:
        return self.root / "manifests" / name / f"{version}.json"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def make_dirs(self) -> None:
        for directory in (self.layers, self.staging, self.leases, self.reports, self.root / "releases"):
            directory.mkdir(parents=True, exist_ok=True)

    def new_staging(self, label: str) -> Path:
        # '@' is in no name, version or hostname: the owner can be read back (see reclaim_dead).
        path = self.staging / f"{label}@{socket.gethostname()}@{os.getpid()}@{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path


def owner_is_dead(host: object, pid: object) -> bool:
    """Provably dead: a process of this host that no longer exists. Another host's process
    cannot be seen from here; only its heartbeat going silent tells."""
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _recorded_timeout(document: dict[str, Any] | None, timeout: float) -> float:
    """The liveness timeout a heartbeat's writer promised (recorded in its file), or ``timeout``
    if longer: a reader with a shorter one must not judge a live writer dead."""
    recorded = (document or {}).get("timeout")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool) and 0 < recorded < 86400:
        return max(timeout, float(recorded))
    return timeout


def is_fresh(path: Path, timeout: float) -> bool:
    """Whether the heartbeat file ``path`` has a live writer: its owner not provably dead and
    its mtime within the writer's recorded timeout (or ``timeout``)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    document = read_json_document(path)
    owner = document or {}
    if owner_is_dead(owner.get("host"), owner.get("pid")):
        return False
    return age <= _recorded_timeout(document, timeout)


def _in_use_files(volume: Volume, timeout: float) -> Iterator[tuple[Path, bool]]:
    """Each in-use file, and whether its worker is alive (see is_fresh)."""
    for path in volume.in_use.glob("*/*/*") if volume.in_use.is_dir() else []:
        yield path, is_fresh(path, timeout)


def releases_in_use(volume: Volume, timeout: float) -> set[tuple[str, str]]:
    """(name, version) of every release a worker ran within ``timeout`` seconds (heartbeat)."""
    return {
        (path.parent.parent.name, path.parent.name) for path, fresh in _in_use_files(volume, timeout) if fresh
    }


def clear_stale_in_use(volume: Volume, timeout: float) -> None:
    """In-use files of workers that died without removing theirs (SIGKILL, a lost host)."""
    for path, fresh in _in_use_files(volume, timeout):
        if not fresh:
            path.unlink(missing_ok=True)


def hold_in_use(
    volume: Volume, name: str, version: str, heartbeat: float, timeout: float | None = None
) -> Path:
    """Mark ``name version`` as used by this process for as long as it (or what it execs) lives.

    A heartbeat process (podenv.heartbeat) touches the file every ``heartbeat`` seconds while
    this process lives, and removes it when it is gone: it survives this process's exec into
    the worker, which needs to know nothing of it. `podenv gc` keeps a release with a fresh
    in-use file.
    """
    from podenv import heartbeat as beating

    path = volume.in_use / name / version / f"{socket.gethostname()}.{os.getpid()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    path.write_text(json.dumps({**owner, "timeout": timeout or heartbeat * 3}))
    beating.start(path, os.getpid(), heartbeat)
    return path


# Markers are a few hundred bytes; anything much larger is not one.
_MARKER_LIMIT = 1 << 20


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _digest(value: object) -> bool:
    return isinstance(value, str) and DIGEST_PATTERN.match(value) is not None


def _layer_marker_is_valid(document: dict[str, Any]) -> bool:
    return _digest(document.get("digest")) and _count(document.get("files")) and _count(document.get("bytes"))


def _release_marker_is_valid(document: dict[str, Any]) -> bool:
    layers = document.get("layers")
    return (
        isinstance(document.get("name"), str)
        and re.match(NAME_PATTERN, document["name"]) is not None
        and isinstance(document.get("version"), str)
        and re.match(VERSION_PATTERN, document["version"]) is not None
        and _digest(document.get("digest"))
        and isinstance(layers, list)
        and all(_digest(layer) for layer in layers)
    )


_MARKER_SHAPES = {MARKER: _layer_marker_is_valid, RELEASE_MARKER: _release_marker_is_valid}


def read_small_file(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes if it is at most ``limit`` bytes; None if it is absent, not a
    regular file (a link, a fifo, a directory) or larger. Never blocks, never follows a link."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = os.read(descriptor, limit + 1)
    finally:
        os.close(descriptor)
    return data if len(data) <= limit else None


def read_json_document(path: Path, limit: int = _MARKER_LIMIT) -> dict[str, Any] | None:
    """A small JSON object from the volume, or None if it is missing or is not one: what the
    volume holds is untrusted (a crash, a full disk or another program may have garbled it)."""
    data = read_small_file(path, limit)
    if data is None:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def read_marker(directory: Path, name: str = MARKER) -> dict[str, Any] | None:
    """The marker ``name`` in ``directory`` if it is whole and well-formed; None otherwise, so
    that a garbled marker reads as "not installed" and the next boot installs it again."""
    document = read_json_document(directory / name)
    if document is None or not _MARKER_SHAPES[name](document):
        return None
    return document


def layer_is_installed(volume: Volume, digest: str) -> bool:
    marker = read_marker(volume.layer_dir(digest))
    return marker is not None and marker.get("digest") == digest


def write_marker(directory: Path, document: dict[str, Any], name: str = MARKER) -> None:
    """Create the marker; never through a link, never over something already there."""
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(directory / name, flags, 0o644), "wb") as stream:
        stream.write(data)


def publish_directory(staging: Path, final: Path) -> bool:
    """Move a complete staging directory into place; False if another installer won."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(final)
        return True
    except OSError:
        if final.exists():
            discard(staging)
            return False
        raise


def discard(path: Path) -> None:
    """Remove a tree that nobody may use: renamed aside first, so it is never seen half gone."""
    if not path.exists():
        return
    trash = path.with_name(f".trash.{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        path.rename(trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


class Lease:
    """An exclusive-create lease file whose mtime is its heartbeat."""

    def __init__(self, path: Path, timeout: float, heartbeat: float) -> None:
        self.path = path
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = uuid.uuid4().hex

    def owner(self) -> dict[str, Any]:
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        return {**owner, "token": self._token, "timeout": self.timeout}

    def try_take(self) -> bool:
        """Take the lease if it is free or stale; False if a live owner holds it."""
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale():
                    return False
                continue
            with os.fdopen(descriptor, "w") as stream:
                json.dump(self.owner(), stream)
            self._start_heartbeat()
            return True
        return False

    def age(self) -> float | None:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def _take_over_if_stale(self) -> bool:
        if self.age() is None:
            return True  # released meanwhile: try again
        if is_fresh(self.path, self.timeout):
            return False
        # Renaming is atomic: of several workers taking over, one moves the stale lease aside.
        with suppress(FileNotFoundError):
            self.path.rename(self.path.with_name(f".stale.{self.path.name}.{uuid.uuid4().hex[:8]}"))
        return True

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="podenv-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        """Let go, removing the lease file only if it is still ours (a stalled holder whose
        lease was taken over must not remove the new owner's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if json.loads(self.path.read_text()).get("token") != self._token:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            return
        self.path.unlink(missing_ok=True)


@contextmanager
def held(lease: Lease) -> Iterator[None]:
    try:
        yield
    finally:
        lease.release()


def live_leases(volume: Volume, timeout: float) -> list[tuple[str, float, dict[str, Any]]]:
    found = []
    for path in sorted(volume.leases.glob("*.lease")):
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if is_fresh(path, timeout):
            found.append((path.stem, age, read_json_document(path) or {}))
    return found


def tree_bytes(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def reclaim_dead(volume: Volume, timeout: float) -> int:
    """Remove the staging of installers that are gone, and their leases; returns bytes freed.

    Same host: the owner's pid no longer exists. Another host: it holds no live lease and its
    staging is older than the timeout (a live installer beats its lease well within it).
    """
    freed = 0
    owners = {(owner.get("host"), owner.get("pid")) for _, _, owner in live_leases(volume, timeout)}
    for path in volume.staging.iterdir() if volume.staging.is_dir() else []:
        parts = path.name.split("@")
        if len(parts) != 4 or path.name.startswith("."):
            continue
        host, pid = parts[1], int(parts[2]) if parts[2].isdigit() else -1
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if owner_is_dead(host, pid) or ((host, pid) not in owners and age > timeout):
            freed += tree_bytes(path)
            discard(path)
    remove_dead_leases(volume.leases)
    return freed


def remove_dead_leases(leases: Path) -> None:
    """Leases whose owner, on this host, is gone (killed before it could let go): left alone,
    they would hold off every other worker until they go stale."""
    for path in leases.glob("*.lease") if leases.is_dir() else []:
        owner = read_json_document(path) or {}
        if owner_is_dead(owner.get("host"), owner.get("pid")):
            path.unlink(missing_ok=True)


@contextmanager
def installing(volume: Volume, name: str, version: str, layers: list[str], timeout: float) -> Iterator[None]:
    """Announce, with a heartbeat, the layers a cold boot is installing or will install, for as
    long as it runs: `podenv gc` keeps them, so that it cannot pull a layer from under it."""
    volume.installing.mkdir(parents=True, exist_ok=True)
    path = volume.installing / f"{socket.gethostname()}@{os.getpid()}@{uuid.uuid4().hex[:8]}.json"
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "timeout": timeout}
    path.write_text(json.dumps({**owner, "name": name, "version": version, "layers": layers}))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(min(2.0, timeout / 3)):
            with suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="podenv-installing", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def layers_being_installed(volume: Volume, timeout: float) -> set[str]:
    """Digests of every layer a live boot is installing or will install; clears dead boots' files."""
    found: set[str] = set()
    for path in volume.installing.glob("*.json") if volume.installing.is_dir() else []:
        if not is_fresh(path, timeout):
            path.unlink(missing_ok=True)
            continue
        layers = (read_json_document(path) or {}).get("layers")
        found |= {layer for layer in layers if _digest(layer)} if isinstance(layers, list) else set()
    return found


def used_bytes(volume: Volume) -> int:
    """What podenv holds on the volume: installed layers (by their markers), kept blobs and
    staging (in-progress and dead installs alike), for the quota."""
    total = sum((read_marker(layer) or {}).get("bytes", 0) for layer in volume.layer_dirs())
    for path in volume.blobs.iterdir() if volume.blobs.is_dir() else []:
        with suppress(OSError):
            total += path.lstat().st_size
    return total + tree_bytes(volume.staging)
