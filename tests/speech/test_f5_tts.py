"""The F5-TTS plugin in the handler, on CPU: a tiny random-weight F5-TTS and Vocos in the real
release layout (tests/speech/f5_weights.py), published and booted by podenv, served by the
handler under the runpod SDK's local API, with any network use made to fail loudly."""

import base64
import http.server
import io
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.localworker import LocalWorker, LocalWorkerError
from tests.speech.support import (
    REPOSITORY,
    boot_model_release,
    plugin_load_events,
    run_in_speech_venv,
    speech_worker,
)
from worker.audio import pcm16_wav

WEIGHTS_SCRIPT = Path(__file__).with_name("f5_weights.py")
FIGURES = REPOSITORY / "build" / "speech-figures" / "f5_tts.json"
# A tiny DiT in place of F5TTS_v1_Base's 1024 x 22 layers; the other keys stay the config's.
TINY_ARCH = {"dim": 64, "depth": 2, "heads": 2, "dim_head": 32, "text_dim": 32, "conv_layers": 1}
STEPS = 8
REFERENCE_TEXT = "A short reference sentence."
TEXT = "Hello there, this is a test of the tiny model."
# Any download attempt goes through this dead proxy and fails loudly; the test's own loopback
# traffic (the local API, the reference audio server) does not.
DEAD_PROXY = {
    name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
} | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def tone_wav(seconds: float, rate: int = 16_000, amplitude: float = 0.3) -> bytes:
    """A 220 Hz tone with a slow tremolo, as 16-bit mono WAV: a stand-in for a voice."""
    samples = [
        int(
            32767
            * amplitude
            * (0.6 + 0.4 * math.sin(2 * math.pi * 3 * n / rate))
            * math.sin(2 * math.pi * 220 * n / rate)
        )
        for n in range(int(seconds * rate))
    ]
    return pcm16_wav(samples, rate)


REFERENCE = tone_wav(1.5)
REFERENCE_B64 = base64.b64encode(REFERENCE).decode()


def job(**fields: Any) -> dict[str, Any]:
    return {
        "text": TEXT,
        "reference_audio": REFERENCE_B64,
        "reference_text": REFERENCE_TEXT,
        "steps": STEPS,
    } | fields


def decode_wav(audio: dict[str, Any]) -> tuple[tuple[int, int, int], list[int], bytes]:
    """The WAV a job returned inline: (rate, channels, sample width), its samples, its bytes."""
    data = base64.b64decode(audio["base64"])
    assert audio["format"] == "wav" and len(data) == audio["bytes"]
    with wave.open(io.BytesIO(data), "rb") as reader:
        shape = (reader.getframerate(), reader.getnchannels(), reader.getsampwidth())
        frames = reader.readframes(reader.getnframes())
    return shape, list(struct.unpack(f"<{len(frames) // 2}h", frames)), data


def release_entries(models: Path) -> list[dict[str, Any]]:
    """envs/tts.yaml's model entries, from the local tiny weights, with the tiny architecture."""
    spec = yaml.safe_load((REPOSITORY / "envs" / "tts.yaml").read_text())
    folders = {"model": models / "f5-tts", "vocoder": models / "vocos"}
    entries = []
    for entry in spec["models"]:
        entry = {key: value for key, value in entry.items() if key != "allow_patterns"}
        role = entry["options"]["role"]
        entry.update(source="local", path=str(folders[role]))
        if role == "model":
            entry["options"] = dict(entry["options"], arch=TINY_ARCH)
        entries.append(entry)
    return entries


@pytest.fixture(scope="module")
def weights(speech_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("f5-weights")
    printed = run_in_speech_venv(speech_python, WEIGHTS_SCRIPT.read_text(), str(out), json.dumps(TINY_ARCH))
    return out, json.loads(printed.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def release(weights: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("f5-release")
    return boot_model_release(work, "tts", release_entries(weights[0]))


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's TMPDIR, to see what it leaves behind."""
    return tmp_path_factory.mktemp("f5-worker-tmp")


@pytest.fixture(scope="module")
def worker(
    speech_python: Path, release: dict[str, str], worker_tmp: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorker]:
    log = tmp_path_factory.mktemp("f5-worker") / "worker.log"
    environment = release | DEAD_PROXY | {"TMPDIR": str(worker_tmp)}
    with speech_worker(speech_python, environment, log) as running:
        yield running


@pytest.fixture(scope="module")
def reference_url() -> Iterator[str]:
    """The reference WAV served over HTTP on loopback, as a client's storage would serve it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = (200, REFERENCE) if self.path == "/reference.wav" else (404, b"")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/reference.wav"
    server.shutdown()
    server.server_close()


def assert_no_network_use(log: str) -> None:
    for sign in ("huggingface.co", "127.0.0.1:9", "Download", "ProxyError", "Connection refused"):
        assert sign not in log, f"{sign!r} in the worker log"


def test_loads_once_before_the_first_job_and_serves_the_same_audio_for_a_seed(
    worker: LocalWorker, weights: tuple[Path, dict[str, Any]]
) -> None:
    answers = [worker.runsync(job(seed=1234)) for _ in range(3)]
    assert [answer["status"] for answer in answers] == ["COMPLETED"] * 3, answers
    outputs = [answer["output"] for answer in answers]
    assert [output["worker"]["plugin_loads"] for output in outputs] == [{"f5_tts": 1}] * 3
    assert outputs[-1]["worker"]["jobs_served"] == outputs[0]["worker"]["jobs_served"] + 2
    assert {output["seed"] for output in outputs} == {1234}
    # Same seed, input and device: the same bytes (one text chunk; CPU).
    assert len({output["audio"]["base64"] for output in outputs}) == 1

    loads = plugin_load_events(worker)
    assert len(loads) == 1 and loads[0]["plugin"] == "f5_tts"
    assert loads[0]["models"] == ["f5-tts-v1-base", "vocos-mel-24khz"]
    log = worker.log_text()
    assert (
        log.index('"event": "plugin_loaded"')
        < log.index('"event": "worker_ready"')
        < log.index(answers[0]["id"])
    )
    assert_no_network_use(log)

    ready = next(event for event in worker.log_events() if event.get("event") == "f5_tts_ready")
    inference = [output["timings"]["inference"] for output in outputs]
    figures = {
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "model": weights[1],
        "steps": STEPS,
        "load_seconds": loads[0]["seconds"],
        "load_import_seconds": ready["import_seconds"],
        "load_weights_seconds": ready["weights_seconds"],
        "load_warmup_seconds": ready["warmup_seconds"],
        "rss_bytes": loads[0]["rss_bytes"],
        "inference_seconds": inference,
        "inference_median_seconds": statistics.median(inference),
        "output_duration_s": outputs[0]["duration_s"],
    }
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nf5_tts figures ({FIGURES}):\n{json.dumps(figures, indent=1)}")


def test_speech_comes_back_as_a_24khz_wav_as_long_as_the_text_asks(worker: LocalWorker) -> None:
    normal = worker.runsync(job(seed=1))
    fast = worker.runsync(job(seed=1, speed=2.0))
    assert normal["status"] == fast["status"] == "COMPLETED", (normal, fast)
    durations = []
    for output in (normal["output"], fast["output"]):
        shape, samples, data = decode_wav(output["audio"])
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
        assert shape == (24_000, 1, 2) and output["sample_rate"] == 24_000
        seconds = len(samples) / 24_000
        assert output["duration_s"] == pytest.approx(seconds, abs=1e-3)
        assert max(abs(sample) for sample in samples) > 0
        durations.append(seconds)
    # f5-tts sizes the speech from the reference's pace: its seconds per byte of transcript.
    expected = 1.5 * len(TEXT.encode()) / len(f"{REFERENCE_TEXT} ".encode())
    assert 0.7 * expected < durations[0] < 1.3 * expected, (durations, expected)
    assert durations[1] == pytest.approx(durations[0] / 2, rel=0.1)


def test_run_then_status_with_a_reference_audio_url(worker: LocalWorker, reference_url: str) -> None:
    answer = worker.run(job(reference_audio=reference_url, seed=1234))
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert output["timings"]["input"] > 0 and output["timings"]["inference"] > 0
    assert set(output) >= {"audio", "sample_rate", "duration_s", "seed", "timings", "worker"}
    # The same reference, fetched instead of inline: the same speech for the same seed.
    assert output["audio"]["base64"] == worker.runsync(job(seed=1234))["output"]["audio"]["base64"]


def test_a_seed_left_out_is_chosen_and_reported(worker: LocalWorker) -> None:
    first, second = (worker.runsync(job())["output"] for _ in range(2))
    assert first["seed"] != second["seed"]
    assert first["audio"]["base64"] != second["audio"]["base64"]
    again = worker.runsync(job(seed=first["seed"]))["output"]
    assert again["audio"]["base64"] == first["audio"]["base64"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": None}, "input.text: Field required"),
        ({"text": "   "}, "input.text: String should have at least 1 character"),
        ({"text": "x" * 2001}, "input.text: String should have at most 2000 characters"),
        ({"reference_text": None}, "input.reference_text: Field required"),
        ({"reference_audio": None}, "input.reference_audio: Field required"),
        ({"speed": 5}, "input.speed: Input should be less than or equal to 2"),
        ({"steps": 0}, "input.steps: Input should be greater than or equal to 4"),
        ({"seed": -1}, "input.seed: Input should be greater than or equal to 0"),
        ({"voice": "x"}, "input.voice: Extra inputs are not permitted"),
        ({"reference_audio": "not base64 !"}, "reference_audio: neither an http(s) URL nor valid base64"),
        ({"reference_audio": base64.b64encode(b"hello").decode()}, "reference_audio: not audio this worker"),
        ({"reference_audio": base64.b64encode(tone_wav(0.2)).decode()}, "reference_audio: 0.20 s long"),
        (
            {"reference_audio": base64.b64encode(tone_wav(2, amplitude=0)).decode()},
            "reference_audio: the audio is silent",
        ),
        (
            {"reference_audio": base64.b64encode(tone_wav(2, amplitude=0.001)).decode()},
            "reference_audio: only 0.00 s of sound after trimming silence",
        ),
    ],
)
def test_a_bad_input_is_a_job_error_naming_the_field(
    worker: LocalWorker, fields: dict[str, Any], expected: str
) -> None:
    job_input = {key: value for key, value in job(**fields).items() if value is not None}
    answer = worker.runsync(job_input)
    assert answer["status"] == "FAILED", answer
    assert expected in answer["error"], answer["error"]
    assert worker.process is not None and worker.process.poll() is None


def test_no_reference_audio_is_left_behind(worker: LocalWorker, worker_tmp: Path) -> None:
    answer = worker.runsync(job(reference_audio=base64.b64encode(tone_wav(1.2)).decode()))
    assert answer["status"] == "COMPLETED", answer
    # f5-tts writes each trimmed reference to a temp file and caches it forever; the plugin
    # removes it after the job (the handler removes the job's own directory).
    assert sorted(worker_tmp.rglob("*.wav")) == []
    assert sorted(worker_tmp.glob("job-*")) == []


def test_describe_shows_the_input_schema_without_loading_a_model(
    speech_python: Path, release: dict[str, str]
) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(speech_python), "-m", "worker.handler", "--describe"],
        env=release,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.monotonic() - started
    schema = json.loads(done.stdout)["f5_tts"]
    assert set(schema["required"]) == {"text", "reference_audio", "reference_text"}
    assert schema["properties"]["steps"]["default"] == 32
    print(f"\n--describe took {seconds:.2f}s")


def start_failure(speech_python: Path, environment: dict[str, str], log: Path) -> str:
    with pytest.raises(LocalWorkerError, match="exited with code 1") as failure:
        speech_worker(speech_python, environment | DEAD_PROXY, log).start()
    message = str(failure.value)
    assert '"event": "worker_failed"' in message and "worker_ready" not in message
    assert_no_network_use(log.read_text())
    return message


def test_a_missing_model_cache_stops_the_worker_at_startup_without_a_download(
    speech_python: Path, release: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    message = start_failure(speech_python, release | {"HF_HUB_CACHE": str(empty)}, tmp_path / "worker.log")
    assert (
        "model f5-tts-v1-base (SWivid/F5-TTS@84e5a410d9cead4de2f847e7c9369a6440bdfaca) is missing" in message
    )
    assert "never downloads" in message


def test_a_checkpoint_missing_from_its_snapshot_stops_the_worker_at_startup(
    speech_python: Path, release: dict[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "hf-hub"
    shutil.copytree(release["HF_HUB_CACHE"], cache)  # symlinks followed: a private copy
    snapshot = next(cache.glob("models--SWivid--F5-TTS/snapshots/*"))
    (snapshot / "F5TTS_v1_Base" / "model_1250000.safetensors").unlink()
    message = start_failure(speech_python, release | {"HF_HUB_CACHE": str(cache)}, tmp_path / "worker.log")
    assert "plugin f5_tts failed to load" in message
    assert "its checkpoint F5TTS_v1_Base/model_1250000.safetensors is not in" in message
    assert "never downloads" in message
