"""The baseline of bench/first_job.py: the common RunPod handler that loads its model inside
the first job. Same plugin, same release, same runpod SDK; only the moment of loading differs."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runpod

from worker.handler import Worker, choose_device
from worker.models import plugin_class
from worker.release import read_release, resolve_model

_worker: Worker | None = None


async def handle(job: dict) -> dict:
    global _worker
    if _worker is None:
        release = read_release(os.environ["PODENV_RELEASE"])
        ((name, layers),) = release.plugins().items()
        device = choose_device(dict(os.environ))
        plugin = plugin_class(name)()
        plugin.load([resolve_model(layer) for layer in layers], device)
        _worker = Worker(release, device, {name: plugin}, {})
    return await _worker.handle(job)


if __name__ == "__main__":
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    runpod.serverless.start({"handler": handle})
