"""The RunPod handler: load every model of the release, then serve jobs.

    podenv boot --exec -- python -m worker.handler              # on RunPod
    python -m worker.handler --rp_serve_api --rp_api_port 8000  # a local API (runpod SDK)
    python -m worker.handler --test_input '{"input": {...}}'    # one local job
    python -m worker.handler --describe                         # the input schema of each plugin

Models load before ``runpod.serverless.start``, so the first job is as fast as the hundredth.
A plugin that fails to load stops the worker (exit 1) unless all its models are optional.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker import logs, settings
from worker.audio import InputError
from worker.models import UnknownPluginError, plugin_class
from worker.models.base import JobContext, Plugin, PluginInput
from worker.outputs import deliver_audio
from worker.release import ModelLayer, Release, ReleaseError, read_release, resolve_model

# Errors after which the CUDA context is unusable: every later job on this process would fail.
_FATAL_CUDA_MARKERS = (
    "CUDA error",
    "CUBLAS_STATUS",
    "CUDNN_STATUS",
    "cuDNN error",
    "illegal memory access",
    "device-side assert",
    "NCCL error",
    "unspecified launch failure",
)


# RunPod refuses larger job payloads (/run: 10 MB, /runsync: 20 MB); a worker cannot tell which
# route a job took, so it holds every job to the larger one (a local --rp_serve_api included).
PAYLOAD_LIMIT = 20_000_000


class WorkerStartError(RuntimeError):
    """The worker must not take jobs: a required plugin could not be loaded."""


def is_fatal_cuda_error(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return type(error).__name__ == "AcceleratorError" or any(marker in text for marker in _FATAL_CUDA_MARKERS)


def choose_device(environ: dict[str, str]) -> str:
    """``PODENV_DEVICE``, else ``cuda`` when torch is in the env and sees a GPU, else ``cpu``."""
    if device := settings.read("PODENV_DEVICE", environ):
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _gpu_bytes() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return int(torch.cuda.memory_allocated())


def _validation_message(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in ("input", *problem["loc"]))
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)


@dataclass
class Worker:
    """The loaded plugins of one release and what the handler needs to serve them."""

    release: Release
    device: str
    plugins: dict[str, Plugin]
    skipped: dict[str, str]
    max_concurrency: int = 1
    plugin_loads: Counter = field(default_factory=Counter)
    jobs_served: int = 0
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def concurrency(self, current: int) -> int:
        """runpod's ``concurrency_modifier``: a fixed number of jobs at once (PODENV_CONCURRENCY)."""
        return self.max_concurrency

    def parse(self, job_input: Any) -> tuple[Plugin, PluginInput]:
        if not isinstance(job_input, dict):
            raise InputError("input: must be a JSON object.")
        size = len(json.dumps(job_input, separators=(",", ":")).encode())
        if size > PAYLOAD_LIMIT:
            raise InputError(
                f"input: {size} bytes, over RunPod's payload limits (10 MB for /run, "
                f"{PAYLOAD_LIMIT // 1_000_000} MB for /runsync); send large audio as a URL."
            )
        fields = dict(job_input)
        name = fields.pop("plugin", None)
        if name is None:
            if len(self.plugins) != 1:
                names = ", ".join(self.plugins)
                raise InputError(f"input.plugin: required on this worker (one of: {names}).")
            name = next(iter(self.plugins))
        if name in self.skipped:
            raise InputError(f"input.plugin: '{name}' is not loaded on this worker ({self.skipped[name]}).")
        if name not in self.plugins:
            raise InputError(f"input.plugin: '{name}' is not one of: {', '.join(self.plugins)}.")
        plugin = self.plugins[name]
        try:
            return plugin, plugin.Input.model_validate(fields)
        except ValidationError as error:
            raise InputError(_validation_message(error)) from None

    def _slot(self, plugin: Plugin) -> asyncio.Semaphore:
        if plugin.name not in self._slots:
            size = self.max_concurrency if plugin.thread_safe else 1
            self._slots[plugin.name] = asyncio.Semaphore(size)
        return self._slots[plugin.name]

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """runpod's handler: one job in, its output (or ``error``, maybe ``refresh_worker``) out."""
        received = time.monotonic()
        try:
            plugin, request = self.parse(job.get("input"))
        except InputError as error:
            return {"error": str(error)}
        async with self._slot(plugin):
            queued = time.monotonic() - received
            return await asyncio.to_thread(self.serve, plugin, request, job["id"], queued)

    def serve(self, plugin: Plugin, request: PluginInput, job_id: str, queued: float) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix=f"job-{job_id}-") as workdir:
            context = JobContext(job_id, Path(workdir))
            started = time.monotonic()
            try:
                output = plugin.run(request, context)
            except InputError as error:
                return {"error": str(error)}
            except Exception as error:  # a plugin failure is the job's error, never the worker's crash
                return self._failure(plugin, job_id, error)
            run_seconds = time.monotonic() - started
        timings = {"queue": round(queued, 4), "input": context.timings.get("input", 0.0)}
        timings["inference"] = round(run_seconds - timings["input"], 4)
        result = dict(output.data)
        if output.audio is not None:
            with context.timed("upload"):
                result["audio"] = deliver_audio(output.audio, job_id)
        timings["upload"] = context.timings.get("upload", 0.0)
        self.jobs_served += 1
        result["timings"] = timings
        result["worker"] = {
            "release": self.release.label,
            "digest": self.release.digest,
            "plugin": plugin.name,
            "device": self.device,
            "plugin_loads": dict(self.plugin_loads),
            "jobs_served": self.jobs_served,
        }
        return result

    def _failure(self, plugin: Plugin, job_id: str, error: Exception) -> dict[str, Any]:
        fatal = is_fatal_cuda_error(error)
        logs.event(
            _log,
            f"job {job_id} failed in plugin {plugin.name}: {type(error).__name__}: {error}",
            logging.ERROR,
            event="job_failed",
            show=("refresh_worker",),
            job_id=job_id,
            plugin=plugin.name,
            refresh_worker=fatal,
            traceback=traceback.format_exc(),
        )
        failure: dict[str, Any] = {"error": f"{plugin.name} failed: {type(error).__name__}: {error}"}
        if fatal:
            failure["refresh_worker"] = True
        return failure


_log = logging.getLogger("podenv.worker")


def _load_plugin(name: str, layers: list[ModelLayer], device: str, environ: dict[str, str]) -> Plugin:
    models = [resolve_model(layer, environ) for layer in layers]
    plugin = plugin_class(name)()
    rss_before, gpu_before, started = _resident_bytes(), _gpu_bytes(), time.monotonic()
    plugin.load(models, device)
    seconds = time.monotonic() - started
    gpu_after = _gpu_bytes()
    fields: dict[str, Any] = {"event": "plugin_loaded", "plugin": name, "seconds": round(seconds, 3)}
    fields["models"] = [model.name for model in models]
    fields["rss_bytes"] = _resident_bytes() - rss_before
    if gpu_after is not None:
        fields["gpu_bytes"] = gpu_after - (gpu_before or 0)
    memory = f"{fields['rss_bytes'] / 2**20:.0f} MiB RSS"
    if "gpu_bytes" in fields:
        memory += f", {fields['gpu_bytes'] / 2**20:.0f} MiB GPU"
    logs.event(_log, f"loaded {name} on {device} in {seconds:.2f}s ({memory})", **fields)
    return plugin


def start_worker(environ: dict[str, str]) -> Worker:
    """Read the release and load every plugin it names, before any job is taken."""
    release = read_release(settings.read("PODENV_RELEASE", environ))
    if not release.models:
        raise WorkerStartError(f"release {release.label} has no model layer with a plugin: nothing to serve.")
    device = choose_device(environ)
    worker = Worker(release, device, {}, {}, max_concurrency=settings.read_int("PODENV_CONCURRENCY", environ))
    for name, layers in release.plugins().items():
        try:
            worker.plugins[name] = _load_plugin(name, layers, device, environ)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}" if not isinstance(error, ReleaseError) else str(error)
            if not all(layer.optional for layer in layers):
                raise WorkerStartError(f"plugin {name} failed to load: {reason}") from error
            worker.skipped[name] = f"optional, failed to load: {reason}"
            message = f"skipped optional plugin {name}: {reason}"
            logs.event(_log, message, logging.WARNING, event="plugin_skipped", plugin=name)
            continue
        worker.plugin_loads[name] += 1
    return worker


def describe(environ: dict[str, str]) -> dict[str, Any]:
    """The input schema of each plugin the release names, without loading any model."""
    release = read_release(settings.read("PODENV_RELEASE", environ))
    return {name: plugin_class(name).input_schema() for name in release.plugins()}


def main() -> int:
    logs.configure()
    environ = dict(os.environ)
    if "--describe" in sys.argv[1:]:
        print(json.dumps(describe(environ), indent=1))
        return 0
    try:
        worker = start_worker(environ)
    except (ReleaseError, WorkerStartError, UnknownPluginError) as error:
        logs.event(_log, f"worker not started: {error}", logging.ERROR, event="worker_failed")
        return 1
    # The SDK logs every job's whole output (base64 audio included) at its default, DEBUG.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    import runpod

    logs.event(
        _log,
        f"serving {worker.release.label} with {', '.join(worker.plugins)} on {worker.device}",
        event="worker_ready",
        release=worker.release.label,
        plugins=list(worker.plugins),
        concurrency=worker.max_concurrency,
        python=sys.executable,
    )
    runpod.serverless.start({"handler": worker.handle, "concurrency_modifier": worker.concurrency})
    return 0


if __name__ == "__main__":
    sys.exit(main())
