"""The one interface every model plugin implements: load once, run one request, describe its input."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class PluginInput(BaseModel):
    """Base of every plugin's job input: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelFiles:
    """One model layer of the release, resolved to its files on this worker.

    ``path`` is the hub snapshot directory for ``hf-hub`` models and the checkpoint file (or
    ``TORCH_HOME`` when the layer names no single file) for ``torch-hub`` models.
    """

    name: str
    id: str
    revision: str
    target: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Audio:
    """Audio a plugin produced: the encoded bytes and their file extension."""

    data: bytes
    extension: str = "wav"


@dataclass
class PluginOutput:
    """What ``run`` returns: JSON-able data, and audio the handler delivers inline or by URL."""

    data: dict[str, Any]
    audio: Audio | None = None


@dataclass
class JobContext:
    """What a plugin may use while it runs one job: a private scratch dir and the job's timings."""

    job_id: str
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the seconds the block takes to ``timings[phase]``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.monotonic() - started, 4)

    def fetch_audio(self, source: str, field_name: str) -> Path:
        """The audio a job input gives (URL or base64) as a local file; timed as ``input``."""
        from worker.audio import fetch_audio

        with self.timed("input"):
            return fetch_audio(source, self.workdir, field_name)


RequestT = TypeVar("RequestT", bound=PluginInput)


class Plugin(ABC, Generic[RequestT]):
    """A model family the worker can serve. One instance per worker, loaded once at startup.

    ``RequestT`` is the plugin's own ``Input`` class: ``class Demo(Plugin[DemoInput])``.
    """

    name: ClassVar[str]
    Input: ClassVar[type[PluginInput]]
    # False: the handler runs one job at a time through this plugin, whatever the concurrency.
    thread_safe: ClassVar[bool] = False

    @abstractmethod
    def load(self, models: list[ModelFiles], device: str) -> None:
        """Load every model into memory on ``device``. Never downloads: the files are given."""

    @abstractmethod
    def run(self, request: RequestT, context: JobContext) -> PluginOutput:
        """Serve one validated request."""

    @classmethod
    def input_schema(cls) -> dict[str, Any]:
        return cls.Input.model_json_schema()
