"""Both speech plugins on an NVIDIA GPU (the device machine: `pytest -m gpu tests/speech`), with
the same test weights and releases as the CPU tests: float16 faster-whisper, models in GPU
memory, and the figures the closing notes report (build/speech-figures/*-cuda.json)."""

import base64
import json
import statistics
from pathlib import Path

import pytest

from tests.speech.support import (
    REPOSITORY,
    boot_model_release,
    plugin_load_events,
    run_in_speech_venv,
    speech_worker,
)
from tests.speech.test_f5_tts import (
    REFERENCE_TEXT,
    TEXT,
    TINY_ARCH,
    WEIGHTS_SCRIPT,
    release_entries,
    tone_wav,
)
from tests.speech.whisperx_fixtures import SPEECH_WAV, FileServer, boot_test_asr_release

pytestmark = pytest.mark.gpu
FIGURES = REPOSITORY / "build" / "speech-figures"


def _serve(worker, jobs: list[dict]) -> tuple[list[dict], dict]:
    answers = [worker.runsync(job) for job in jobs]
    assert all(answer["status"] == "COMPLETED" for answer in answers), answers
    (load,) = plugin_load_events(worker)
    return [answer["output"] for answer in answers], load


def _record(name: str, load: dict, outputs: list[dict]) -> None:
    figures = {
        "device": "cuda",
        "load_seconds": load["seconds"],
        "rss_bytes": load["rss_bytes"],
        "gpu_bytes": load["gpu_bytes"],
        "inference_seconds_median": statistics.median(o["timings"]["inference"] for o in outputs[1:]),
    }
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}-cuda.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\n{name} on cuda: {json.dumps(figures)}")


def test_f5_tts_loads_into_gpu_memory_and_speaks(speech_python: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    run_in_speech_venv(speech_python, WEIGHTS_SCRIPT.read_text(), str(weights), json.dumps(TINY_ARCH))
    release = boot_model_release(tmp_path / "release", "tts", release_entries(weights))
    reference = base64.b64encode(tone_wav(2.0)).decode()
    job = {"text": TEXT, "reference_audio": reference, "reference_text": REFERENCE_TEXT, "seed": 1}
    with speech_worker(speech_python, release, tmp_path / "worker.log", device="cuda") as worker:
        outputs, load = _serve(worker, [job] * 4)
    assert load["gpu_bytes"] > 0
    assert {o["worker"]["device"] for o in outputs} == {"cuda"}
    assert len({o["audio"]["base64"] for o in outputs}) == 1, "same seed, same audio on the GPU too"
    _record("f5_tts", load, outputs)


def test_whisperx_transcribes_on_the_gpu_in_float16(speech_python: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    with FileServer(served) as files:
        release = boot_test_asr_release(tmp_path / "asr", speech_python, files, served)
    job = {"audio": base64.b64encode(SPEECH_WAV.read_bytes()).decode()}
    with speech_worker(speech_python, release, tmp_path / "worker.log", device="cuda") as worker:
        outputs, load = _serve(worker, [job] * 4)
    assert load["gpu_bytes"] > 0
    assert "hello world" in outputs[0]["text"].lower().replace(",", "").replace(".", "")
    _record("whisperx", load, outputs)
