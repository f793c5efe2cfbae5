"""The in-use heartbeat of a running worker: a small process that touches the worker's in-use
file while the worker lives and removes it when the worker is gone.

It is started by `podenv boot --exec` just before the exec, as a fresh interpreter with a
minimal environment rather than a fork: a forked child keeps the boot's environment (the
store's credentials among it) readable in /proc/<pid>/environ for the worker's whole life,
whatever the child later does to ``os.environ``.

    python -m podenv.heartbeat PATH PARENT_PID SECONDS
"""

import os
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

# All the heartbeat needs to start Python and import podenv; nothing else is passed on.
_KEPT = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ")


def start(path: Path, parent: int, seconds: float) -> None:
    """Start the heartbeat for ``path`` of the process ``parent`` (normally this one)."""
    environment = {name: os.environ[name] for name in _KEPT if name in os.environ}
    subprocess.Popen(
        [sys.executable, "-m", "podenv.heartbeat", str(path), str(parent), str(seconds)],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def beat_while_alive(path: Path, parent: int, seconds: float) -> None:
    last = time.monotonic()
    while os.getppid() == parent:
        time.sleep(min(1.0, seconds))
        if time.monotonic() - last >= seconds:
            with suppress(OSError):
                os.utime(path)
            last = time.monotonic()
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    beat_while_alive(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
