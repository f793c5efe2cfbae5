"""Child processes podenv starts and must not leave behind (SeaweedFS, a local worker)."""

import os
import signal
import subprocess
from pathlib import Path


def stop_process_group(process: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGTERM the group ``process`` leads (started with ``start_new_session``), SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def unmount(mountpoint: Path) -> None:
    """Detach a FUSE mount we made (lazily: a test's open file must not keep it up)."""
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False, capture_output=True)
