"""Small plugins for the handler's unit tests: real Plugin subclasses, registered by the tests."""

import time
from typing import ClassVar

from pydantic import Field

from worker.models.base import Audio, JobContext, ModelFiles, Plugin, PluginInput, PluginOutput


class EchoInput(PluginInput):
    text: str = Field(min_length=1)
    repeat: int = Field(default=1, ge=1, le=3)
    fail_with: str | None = None
    sleep: float = 0.0


class EchoPlugin(Plugin):
    name: ClassVar[str] = "echo"
    Input = EchoInput

    def load(self, models: list[ModelFiles], device: str) -> None:
        self.models = models

    def run(self, request: EchoInput, context: JobContext) -> PluginOutput:
        if request.fail_with:
            raise RuntimeError(request.fail_with)
        time.sleep(request.sleep)
        return PluginOutput({"text": request.text * request.repeat}, Audio(b"RIFF" + b"\0" * 100))


class ParallelEchoPlugin(EchoPlugin):
    name: ClassVar[str] = "parallel"
    thread_safe: ClassVar[bool] = True


class BrokenPlugin(EchoPlugin):
    name: ClassVar[str] = "broken"

    def load(self, models: list[ModelFiles], device: str) -> None:
        raise OSError("weights are corrupt")
