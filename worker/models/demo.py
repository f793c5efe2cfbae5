"""The demo's plugin: small enough for any CPU, real in every part the speech plugins use.

It loads its model files from the release's hub cache, answers with the env's ``greeting``
package (so a release that changes that package changes the answer) and returns a short tone
as WAV audio, which the handler delivers inline or through S3 like speech.
"""

import json
import math
from typing import ClassVar

from pydantic import Field

from worker.audio import pcm16_wav
from worker.models.base import Audio, JobContext, ModelFiles, Plugin, PluginInput, PluginOutput

SAMPLE_RATE = 16_000


class DemoInput(PluginInput):
    name: str = Field(min_length=1, max_length=100, description="who to greet")
    tone_hz: float = Field(default=440.0, ge=20.0, le=8000.0, description="pitch of the returned tone")
    seconds: float = Field(default=0.5, gt=0.0, le=30.0, description="length of the returned tone")


def tone_wav(frequency: float, seconds: float) -> bytes:
    frames = int(SAMPLE_RATE * seconds)
    return pcm16_wav(
        [int(12000 * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE)) for n in range(frames)], SAMPLE_RATE
    )


class DemoPlugin(Plugin[DemoInput]):
    name: ClassVar[str] = "demo"
    Input = DemoInput
    thread_safe: ClassVar[bool] = True

    def load(self, models: list[ModelFiles], device: str) -> None:
        import greeting  # the demo env's conda package

        self._greeting = greeting
        model = models[0]
        self._config = json.loads((model.path / "config.json").read_text())
        self._weights = len((model.path / "weights.bin").read_bytes())
        self._model = model

    def run(self, request: DemoInput, context: JobContext) -> PluginOutput:
        data = {
            "text": self._greeting.hello(request.name),
            "greeting_version": self._greeting.VERSION,
            "model": f"{self._model.id}@{self._model.revision}",
            "model_weights_bytes": self._weights,
        }
        return PluginOutput(data, Audio(tone_wav(request.tone_hz, request.seconds)))
