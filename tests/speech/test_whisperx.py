"""The WhisperX plugin end to end: envs/asr.yaml's layers (test weights) built, published and booted
by podenv, the handler serving them under ``--rp_serve_api`` in the speech venv, on CPU.

Real parts: whisperx 3.8.6's own loaders and pipeline, a real Whisper tiny.en transcribing real
(synthesised) speech, the pyannote VAD bundled in whisperx, torchaudio's wav2vec2 pipeline
loading its checkpoint from TORCH_HOME, NLTK reading punkt_tab.zip from the release. Random
parts: the alignment weights, so word timings are structurally right but not accurate.

Every proxy variable of the worker points at a recorder: any attempt to reach the network
(a model download, telemetry) is seen, and the test fails on it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import statistics
import wave
from pathlib import Path
from typing import Any

import pytest

from devkit.localworker import LocalWorker, LocalWorkerError
from tests.speech.support import REPOSITORY, plugin_load_events, run_in_speech_venv, speech_worker
from tests.speech.whisperx_fixtures import (
    HF_ALIGNER_SCRIPT,
    SPEECH_WAV,
    ConnectionRecorder,
    FileServer,
    boot_test_asr_release,
    write_punkt_tab_zip,
)
from worker.models.base import ModelFiles
from worker.models.whisperx import ModelSetupError, classify

FIGURES = REPOSITORY / "build" / "speech-figures" / "whisperx.json"


def _duration(path: Path) -> float:
    with wave.open(str(path)) as audio:
        return audio.getnframes() / audio.getframerate()


SPEECH_SECONDS = _duration(SPEECH_WAV)
SPEECH_B64 = base64.b64encode(SPEECH_WAV.read_bytes()).decode()


@pytest.fixture(scope="module")
def recorder():
    with ConnectionRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("served")
    shutil.copy(SPEECH_WAV, directory / SPEECH_WAV.name)
    return directory


@pytest.fixture(scope="module")
def files(served_dir):
    with FileServer(served_dir) as server:
        yield server


@pytest.fixture(scope="module")
def release(tmp_path_factory, speech_python, files, served_dir) -> dict[str, str]:
    return boot_test_asr_release(tmp_path_factory.mktemp("asr"), speech_python, files, served_dir)


@pytest.fixture(scope="module")
def worker(release, speech_python, recorder, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "whisperx-worker.log"
    with speech_worker(speech_python, {**release, **recorder.environment()}, log) as worker:
        yield worker


def _job(worker: LocalWorker, job_input: dict[str, Any]) -> dict[str, Any]:
    response = worker.runsync(job_input)
    assert response["status"] == "COMPLETED", f"{response}\n{worker.log_text()[-3000:]}"
    return response["output"]


def _plain(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def check_transcript(output: dict[str, Any]) -> None:
    """Real words from real speech; word timings well formed (random alignment weights)."""
    assert output["language"] == "en"
    assert output["aligned"] is True
    assert output["duration_s"] == pytest.approx(SPEECH_SECONDS, abs=0.01)
    assert "audio" not in output
    assert "hello world" in _plain_text(output["text"]), output["text"]
    words = [word for segment in output["segments"] for word in segment["words"]]
    assert {"hello", "world", "speech", "test"} <= {_plain(word["word"]) for word in words}, words
    for segment in output["segments"]:
        assert set(segment) == {"start", "end", "text", "words"}
        assert 0.0 <= segment["start"] <= segment["end"] <= output["duration_s"] + 0.01, segment
    for word in words:
        assert set(word) == {"word", "start", "end", "score"}
        assert isinstance(word["start"], float) and isinstance(word["end"], float), word
        assert 0.0 <= word["start"] <= word["end"] <= output["duration_s"] + 0.01, word
        assert 0.0 <= word["score"] <= 1.0, word
    starts = [word["start"] for word in words]
    assert starts == sorted(starts)
    assert set(output["stage_seconds"]) == {"decode", "transcribe", "align"}
    assert output["model"].startswith("Systran/faster-whisper-tiny.en@")


def _plain_text(text: str) -> str:
    return " ".join(_plain(word) for word in text.split())


def test_transcribes_base64_speech_with_word_timings(worker):
    output = _job(worker, {"audio": SPEECH_B64})
    check_transcript(output)
    assert output["worker"]["plugin"] == "whisperx"
    assert set(output["timings"]) == {"queue", "input", "inference", "upload"}


def test_run_then_status(worker):
    response = worker.run({"audio": f"data:audio/wav;base64,{SPEECH_B64}", "batch_size": 4})
    assert response["status"] == "COMPLETED", response
    check_transcript(response["output"])


def test_audio_from_an_http_url(worker, files):
    output = _job(worker, {"audio": files.url(SPEECH_WAV.name), "language": "en"})
    check_transcript(output)
    assert f"/{SPEECH_WAV.name}" in files.requested
    assert output["timings"]["input"] > 0


def test_silence_is_an_empty_transcript(worker, tmp_path):
    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 16_000)
    output = _job(worker, {"audio": base64.b64encode(silence.read_bytes()).decode()})
    assert (output["text"], output["segments"], output["duration_s"]) == ("", [], 1.0)
    assert output["aligned"] is True


def test_transcript_without_word_timings(worker):
    output = _job(worker, {"audio": SPEECH_B64, "word_timestamps": False, "initial_prompt": "A recording."})
    assert output["aligned"] is False
    assert "hello world" in _plain_text(output["text"])
    assert all("words" not in segment for segment in output["segments"])
    assert "align" not in output["stage_seconds"]


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({}, "input.audio: Field required"),
        ({"audio": "not base64 at all!"}, "audio: neither an http(s) URL nor valid base64 audio"),
        ({"audio": base64.b64encode(b"plain text, no audio").decode()}, "input.audio: ffmpeg cannot decode"),
        ({"audio": "http://127.0.0.1:1/missing.wav"}, "audio: the URL could not be fetched"),
        ({"audio": SPEECH_B64, "language": "fr"}, "input.language: this worker's model transcribes English"),
        ({"audio": SPEECH_B64, "language": "english"}, "input.language: String should match pattern"),
        ({"audio": SPEECH_B64, "batch_size": 0}, "input.batch_size: Input should be greater than"),
        ({"audio": SPEECH_B64, "diarize": True}, "input.diarize: Extra inputs are not permitted"),
    ],
    ids=["missing", "bad-base64", "not-audio", "no-server", "language", "language-form", "batch", "extra"],
)
def test_bad_input_is_a_job_error_naming_the_field(worker, job_input, expected):
    response = worker.runsync(job_input)
    assert response["status"] == "FAILED", response
    assert expected in response["error"], response["error"]


def test_a_missing_url_is_a_job_error(worker, files):
    response = worker.runsync({"audio": files.url("absent.wav")})
    assert response["status"] == "FAILED"
    assert "audio: fetching the URL failed with HTTP 404" in response["error"]


def test_loads_once_serves_many_and_measures(worker, recorder):
    inference, stages = [], []
    for _ in range(3):
        output = _job(worker, {"audio": SPEECH_B64, "language": "en"})
        check_transcript(output)
        inference.append(output["timings"]["inference"])
        stages.append(output["stage_seconds"])
    assert output["worker"]["plugin_loads"] == {"whisperx": 1}
    assert output["worker"]["jobs_served"] >= 3

    loads = plugin_load_events(worker)
    assert [event["plugin"] for event in loads] == ["whisperx"], loads
    events = [event.get("event") for event in worker.log_events()]
    assert events.index("plugin_loaded") < events.index("worker_ready")
    assert "job_failed" not in events  # bad input is the client's error, not a plugin failure
    # Loaded before the first job: runpod logs "<job id> | Started." for each job it takes.
    lines = worker.log_text().splitlines()
    loaded_at = next(n for n, line in enumerate(lines) if '"event": "plugin_loaded"' in line)
    jobs = [n for n, line in enumerate(lines) if line.endswith("| Started.")]
    assert len(jobs) >= 8 and loaded_at < jobs[0]
    load = loads[0]
    assert load["models"] == ["faster-whisper-large-v3", "wav2vec2-asr-base-960h", "nltk-punkt-tab"]

    figures = {
        "device": "cpu",
        "audio_seconds": round(SPEECH_SECONDS, 3),
        "load_seconds": load["seconds"],
        "rss_bytes": load["rss_bytes"],
        "inference_seconds_median_of_3": statistics.median(inference),
        "inference_seconds": inference,
        "stage_seconds_median": {
            stage: statistics.median(sample[stage] for sample in stages) for stage in stages[0]
        },
        "model": output["model"],
    }
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nwhisperx on CPU: {json.dumps(figures)}")
    assert recorder.attempts == [], f"the worker tried to reach the network: {recorder.attempts}"


@pytest.mark.parametrize(
    ("variable", "model"),
    [("HF_HUB_CACHE", "faster-whisper-large-v3"), ("TORCH_HOME", "wav2vec2-asr-base-960h")],
)
def test_a_missing_model_cache_stops_the_worker(release, speech_python, tmp_path, variable, model):
    with ConnectionRecorder() as recorder:
        empty = tmp_path / "empty-cache"
        empty.mkdir()
        env = {**release, **recorder.environment(), variable: str(empty)}
        worker = speech_worker(speech_python, env, tmp_path / "worker.log")
        with pytest.raises(LocalWorkerError, match="exited with code 1"):
            worker.start()
        failures = [event for event in worker.log_events() if event.get("event") == "worker_failed"]
        assert len(failures) == 1, worker.log_text()
        assert f"model {model} " in failures[0]["msg"]
        assert "never downloads" in failures[0]["msg"]
        assert recorder.attempts == []


def test_a_hugging_face_alignment_model_aligns_offline(speech_python, tmp_path, monkeypatch):
    """The other kind of alignment layer: a Wav2Vec2ForCTC snapshot (tiny, random) with its
    processor, loaded by whisperx from the layer's directory; Dutch, with a Dutch punkt_tab."""
    write_punkt_tab_zip(tmp_path / "nltk" / "tokenizers" / "punkt_tab.zip", ("dutch",))
    with ConnectionRecorder() as recorder:
        for name, value in {
            **recorder.environment(),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }.items():
            monkeypatch.setenv(name, value)
        printed = run_in_speech_venv(
            speech_python, HF_ALIGNER_SCRIPT, str(tmp_path / "wav2vec2-nl"), str(tmp_path / "nltk")
        )
        assert recorder.attempts == []
    result = json.loads(printed.splitlines()[-1])
    assert result["type"] == "huggingface"
    words = [word for segment in result["segments"] for word in segment["words"]]
    assert [word["word"] for word in words] == ["Hallo", "wereld.", "Dit", "is", "een", "test."]
    assert len(result["segments"]) == 2  # split into sentences by the Dutch Punkt model
    for word in words:
        assert 0.0 <= word["start"] <= word["end"] <= 1.0, word


def _files(tmp_path: Path, name: str, role: str | None, target: str, **options: Any) -> ModelFiles:
    path = tmp_path / name
    path.mkdir()
    if role in (None, "asr") and target == "hf-hub":
        for file in ("model.bin", "config.json", "tokenizer.json"):
            (path / file).write_text("{}")
    if role is not None:
        options["role"] = role
    return ModelFiles(name, f"test/{name}", "0" * 40, target, path, options)


def test_layer_roles_are_checked_before_any_model_loads(tmp_path):
    asr = _files(tmp_path, "asr", None, "hf-hub")
    align = _files(tmp_path, "align", None, "torch-hub", language="en")
    punkt = tmp_path / "nltk" / "tokenizers" / "punkt_tab.zip"
    punkt.parent.mkdir(parents=True)
    punkt.write_bytes(b"")
    nltk = ModelFiles("nltk", "nltk_data/punkt_tab", "r", "torch-hub", punkt, {"role": "nltk-data"})

    layers = classify([asr, align, nltk])
    assert (layers.asr, layers.align, layers.nltk_roots) == (asr, {"en": align}, [tmp_path / "nltk"])
    assert classify([asr]).align == {}

    with pytest.raises(ModelSetupError, match="punkt_tab, which no layer of the release ships"):
        classify([asr, align])
    with pytest.raises(ModelSetupError, match="exactly one faster-whisper"):
        classify([asr, _files(tmp_path, "asr2", "asr", "hf-hub")])
    with pytest.raises(ModelSetupError, match=r"needs options\.language"):
        classify([asr, _files(tmp_path, "align2", "align", "torch-hub"), nltk])
    with pytest.raises(ModelSetupError, match=r"options\.role 'vad'"):
        classify([asr, _files(tmp_path, "vad", "vad", "torch-hub")])
    (asr.path / "tokenizer.json").unlink()
    with pytest.raises(ModelSetupError, match=r"model asr: .* lacks tokenizer.json"):
        classify([asr])
