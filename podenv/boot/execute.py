"""The worker's process: the release's environment, then exec."""

import os
import sys
import time

from podenv.boot.report import ReadyRelease
from podenv.errors import BootError
from podenv.layout import CACHE_VARIABLES, RELEASE_FILE, VIEW_DIRS
from podenv.settings import RELEASE
from podenv.volume import VISIBILITY_GRACE

TELEMETRY_OFF = {
    "ORT_DISABLE_TELEMETRY": "1",
    "PYANNOTE_METRICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
STORE_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def worker_environment(ready: ReadyRelease, base: dict[str, str]) -> dict[str, str]:
    """The variables the worker runs with: the env's own tools first, the release's caches, offline."""
    env = dict(base)
    prefix = str(ready.env_prefix)
    env["PATH"] = os.pathsep.join([f"{prefix}/bin", f"{prefix}/local/bin", base.get("PATH", "/usr/bin:/bin")])
    env["CONDA_PREFIX"] = prefix
    for target, variable in CACHE_VARIABLES.items():
        env[variable] = str(ready.directory / VIEW_DIRS[target])
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    # Libraries the plugins import phone home unless told not to (onnxruntime, under pyannote,
    # connects to Microsoft's telemetry endpoint at import on Linux).
    env.update(TELEMETRY_OFF)
    env[RELEASE.name] = str(ready.directory / RELEASE_FILE)
    if ready.code is not None:
        # The release's handler and plugins, and only those: PYTHONSAFEPATH keeps the working
        # directory (an image or a checkout with its own worker/) off the front of sys.path.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ready.code), base.get("PYTHONPATH")]))
        env["PYTHONSAFEPATH"] = "1"
    env.pop("PYTHONHOME", None)
    # The store's credentials were for boot; the handler and its model code never need them.
    for name in STORE_CREDENTIALS:
        env.pop(name, None)
    return env


def exec_into(ready: ReadyRelease, command: list[str]) -> None:
    environment = worker_environment(ready, dict(os.environ))
    sys.stdout.flush()
    sys.stderr.flush()
    # A release another worker installed through another mount of a network volume can reach
    # this mount's name cache up to about a second late (weed mount): look again, briefly.
    deadline = time.monotonic() + VISIBILITY_GRACE
    while True:
        try:
            os.execvpe(command[0], command, environment)  # noqa: S606 - exec is the point of boot
        except OSError as error:
            if isinstance(error, FileNotFoundError) and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            raise BootError(f"cannot run {command[0]!r} in {ready.env_prefix}: {error.strerror}.") from None
