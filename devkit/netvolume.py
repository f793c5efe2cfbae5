"""A simulated network volume: a FUSE passthrough that makes metadata slow and data paced.

RunPod's network volumes are MooseFS: each lookup, create, open, stat, rename or unlink is a
round trip to the metadata server, and data flows through a link of finite bandwidth. This
passthrough mirrors a directory (``source``) at ``mountpoint`` and

* sleeps ``latency`` seconds in every metadata request (lookups and stats reach it because
  entry and negative lookups are not cached, as MooseFS's own defaults; attributes are
  cached ``attr_timeout`` seconds, MooseFS's ``mfsattrcacheto`` default of 1 s);
* paces reads and writes through one shared link of ``bandwidth`` bytes per second.

libfuse runs its requests on several threads, and the sleeps release the GIL, so concurrent
clients overlap their round trips as they do on a real volume; requests in one directory are
not serialised the way MooseFS serialises creates under one parent (our figures are
therefore kinder to many writers in one directory than a real volume is).

It needs libfuse3 (Debian's ``fuse3``: ``make setup`` installs it as root) and the pinned
``mfusepy`` binding. Tests and benches start and stop it with :class:`NetworkVolume`; by hand::

    python -m devkit.netvolume SOURCE MOUNTPOINT --latency-ms 1 --mbps 500
"""

import argparse
import errno
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.processes import stop_process_group, unmount
from podenv.errors import PodenvError

# runpod-python PR #538, on a real RunPod volume: 40,000 files of 16 KiB.
PR538_FILES = 40_000
PR538_FILE_SIZE = 16 << 10
PR538_SERIAL_S = 429.0
PR538_PARALLEL_S = 62.0

DEFAULT_LATENCY = 0.001
DEFAULT_BANDWIDTH = 500e6
_START_TIMEOUT = 30.0
_EPOCH_SPECIAL_NS = 10**10


class _Link:
    """One shared link: each transfer reserves its share of time on it, then waits for it."""

    def __init__(self, bandwidth: float) -> None:
        self.bandwidth = bandwidth
        self._lock = threading.Lock()
        self._free_at = 0.0

    def carry(self, size: int) -> None:
        if self.bandwidth <= 0:
            return
        with self._lock:
            start = max(self._free_at, time.monotonic())
            self._free_at = start + size / self.bandwidth
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _operations(source: str, latency: float, bandwidth: float) -> Any:
    import mfusepy

    link = _Link(bandwidth)

    def round_trip() -> None:
        if latency > 0:
            time.sleep(latency)

    def real(path: str) -> str:
        return source + path

    class Passthrough(mfusepy.Operations):
        use_ns = True

        def __call_os(self, call, *arguments):
            try:
                return call(*arguments)
            except OSError as error:
                raise mfusepy.FuseOSError(error.errno or errno.EIO) from None

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            round_trip()
            st = self.__call_os(os.fstat, fh) if fh is not None else self.__call_os(os.lstat, real(path))
            names = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino", "st_blocks")
            found = {name: getattr(st, name) for name in names}
            found.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return found

        def access(self, path: str, amode: int) -> int:
            round_trip()
            if not os.access(real(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def readlink(self, path: str) -> str:
            round_trip()
            return self.__call_os(os.readlink, real(path))

        def readdir(self, path: str, fh: int) -> list[str]:
            round_trip()
            return [".", "..", *self.__call_os(os.listdir, real(path))]

        def mkdir(self, path: str, mode: int) -> int:
            round_trip()
            self.__call_os(os.mkdir, real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            round_trip()
            self.__call_os(os.rmdir, real(path))
            return 0

        def unlink(self, path: str) -> int:
            round_trip()
            self.__call_os(os.unlink, real(path))
            return 0

        def symlink(self, target: str, source_name: str) -> int:
            round_trip()
            self.__call_os(os.symlink, source_name, real(target))
            return 0

        def link(self, target: str, source_name: str) -> int:
            round_trip()
            self.__call_os(os.link, real(source_name), real(target))
            return 0

        def rename(self, old: str, new: str) -> int:
            round_trip()
            self.__call_os(os.rename, real(old), real(new))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            round_trip()
            self.__call_os(os.chmod, real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            round_trip()
            self.__call_os(os.lchown, real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            round_trip()
            # utimensat's UTIME_NOW reaches us as a time a second after the epoch (libfuse puts
            # the special value in tv_nsec): take it, and any such time, as "now".
            if times is None or min(times) < _EPOCH_SPECIAL_NS:
                self.__call_os(os.utime, real(path))
            else:
                self.__call_os(lambda: os.utime(real(path), ns=times, follow_symlinks=False))
            return 0

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            round_trip()
            if fh is not None:
                self.__call_os(os.ftruncate, fh, length)
            else:
                self.__call_os(os.truncate, real(path), length)
            return 0

        def open(self, path: str, flags: int) -> int:
            round_trip()
            return self.__call_os(os.open, real(path), flags)

        def create(self, path: str, mode: int, flags: int) -> int:
            round_trip()
            return self.__call_os(os.open, real(path), flags | os.O_CREAT, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            data = self.__call_os(os.pread, fh, size, offset)
            link.carry(len(data))
            return data

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            link.carry(len(data))
            return self.__call_os(os.pwrite, fh, data, offset)

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            round_trip()  # MooseFS's close is a round trip (it commits the file's length)
            self.__call_os(os.close, fh)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            round_trip()
            self.__call_os(os.fsync, fh)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            round_trip()
            st = self.__call_os(os.statvfs, real(path))
            names = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
            return {name: getattr(st, name) for name in names}

    return Passthrough()


def serve(source: Path, mountpoint: Path, latency: float, bandwidth: float, attr_timeout: float) -> None:
    """Mount in the foreground until unmounted (the process's whole life)."""
    import mfusepy

    operations = _operations(str(source.resolve()), latency, bandwidth)
    # libfuse returns non-zero when the mount goes away under it (our lazy unmount): not an error.
    with suppress(RuntimeError):
        mfusepy.FUSE(
            operations,
            str(mountpoint),
            foreground=True,
            fsname="podenv-netvolume",
            attr_timeout=attr_timeout,
            entry_timeout=0,
            negative_timeout=0,
        )


@dataclass
class NetworkVolume:
    """A simulated network volume over ``source`` at ``mountpoint``, in a child process."""

    source: Path
    mountpoint: Path
    latency: float = DEFAULT_LATENCY
    bandwidth: float = DEFAULT_BANDWIDTH
    attr_timeout: float = 1.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        return f"{self.latency * 1000:g} ms per metadata request, {self.bandwidth / 1e6:g} MB/s link"

    def start(self) -> "NetworkVolume":
        self.source.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log = open(self.mountpoint.parent / f"{self.mountpoint.name}.netvolume.log", "ab")  # noqa: SIM115
        arguments = [str(self.source), str(self.mountpoint), "--latency-ms", str(self.latency * 1000)]
        arguments += ["--mbps", str(self.bandwidth / 1e6), "--attr-timeout", str(self.attr_timeout)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devkit.netvolume", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PodenvError(f"the simulated volume did not mount at {self.mountpoint}; see {log.name}.")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        unmount(self.mountpoint)
        stop_process_group(self.process)

    def __enter__(self) -> "NetworkVolume":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fuse_available() -> str | None:
    """None if a simulated volume can be mounted here; else why not, in one sentence."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: the simulated network volume needs FUSE."
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"libfuse3 cannot be loaded ({error}); install Debian's fuse3 (make setup does, as root)."
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description="a simulated network volume (FUSE passthrough)")
    parser.add_argument("source", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY * 1000)
    parser.add_argument("--mbps", type=float, default=DEFAULT_BANDWIDTH / 1e6, help="link, MB/s (0: unpaced)")
    parser.add_argument("--attr-timeout", type=float, default=1.0)
    arguments = parser.parse_args()
    serve(arguments.source, arguments.mountpoint, arguments.latency_ms / 1000, arguments.mbps * 1e6,
          arguments.attr_timeout)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
