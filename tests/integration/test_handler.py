"""The handler in the packed demo env, as on RunPod: `podenv boot --exec -- python -m worker.handler`
under the runpod SDK's local API, the env's own python, the release's model cache, SeaweedFS."""

import base64
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from devkit.localworker import LocalWorker, LocalWorkerError
from devkit.seaweed import SeaweedServer
from tests.integration.boot_support import PODENV, REPOSITORY

pytestmark = pytest.mark.s3


def booted_worker(release: dict[str, str], root: Path, extra: dict[str, str] | None = None) -> LocalWorker:
    environment = dict(release, PODENV_LOG_FORMAT="json", PYTHONUNBUFFERED="1", **(extra or {}))
    environment.pop("store")
    command = [*PODENV, "boot", "--root", str(root), "--env", "demo", "--store", release["store"]]
    command += ["--exec", "--", "python", "-m", "worker.handler"]
    return LocalWorker(command, environment, root.parent / f"{root.name}.log", cwd=REPOSITORY)


@pytest.fixture(scope="module")
def worker(worker_release: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    with booted_worker(worker_release, tmp_path_factory.mktemp("volume") / "podenv") as running:
        yield running


def test_first_job_is_served_by_models_loaded_once_before_it(worker: LocalWorker) -> None:
    first = worker.runsync({"name": "Ada"})
    assert first["status"] == "COMPLETED", first
    output = first["output"]
    assert output["text"] == "hello Ada from greeting 1.0"
    assert output["model"] == "podenv/demo-model@r1"
    assert output["worker"]["plugin_loads"] == {"demo": 1}
    later = [worker.runsync({"name": f"n{index}"}) for index in range(3)]
    assert [job["output"]["worker"]["plugin_loads"] for job in later] == [{"demo": 1}] * 3
    assert later[-1]["output"]["worker"]["jobs_served"] == output["worker"]["jobs_served"] + 3
    events = worker.log_events()
    loads = [index for index, event in enumerate(events) if event.get("event") == "plugin_loaded"]
    ready = [index for index, event in enumerate(events) if event.get("event") == "worker_ready"]
    assert len(loads) == 1 and len(ready) == 1 and loads[0] < ready[0]
    # The runpod SDK logs each job after the worker is ready: no job ran before the models loaded.
    log = worker.log_text()
    assert log.index('"event": "worker_ready"') < log.index(first["id"])


def test_the_handler_runs_on_the_env_python_from_the_volume(worker: LocalWorker) -> None:
    ready = next(event for event in worker.log_events() if event.get("event") == "worker_ready")
    assert "/releases/demo/" in ready["python"] or "/layers/" in ready["python"], ready["python"]
    assert not ready["python"].startswith(str(Path(shutil.which("python3") or "/usr").parent))


def test_run_then_status_answers_like_runsync(worker: LocalWorker) -> None:
    answer = worker.run({"name": "Grace", "seconds": 0.1})
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["text"] == "hello Grace from greeting 1.0"
    timings = answer["output"]["timings"]
    assert set(timings) == {"queue", "input", "inference", "upload"}
    assert all(value >= 0 for value in timings.values())


def test_small_audio_comes_back_inline_as_wav(worker: LocalWorker) -> None:
    audio = worker.runsync({"name": "Ada", "seconds": 0.25})["output"]["audio"]
    data = base64.b64decode(audio["base64"])
    assert audio["format"] == "wav" and len(data) == audio["bytes"] == 44 + 2 * 4000
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        ({}, "input.name: Field required"),
        ({"name": ""}, "input.name: String should have at least 1 character"),
        ({"name": "Ada", "tone_hz": 5}, "input.tone_hz"),
        ({"name": "Ada", "volume": 3}, "input.volume: Extra inputs are not permitted"),
        ({"name": "Ada", "plugin": "f5_tts"}, "input.plugin: 'f5_tts' is not one of: demo"),
    ],
)
def test_a_bad_input_is_a_job_error_naming_the_field(
    worker: LocalWorker, job_input: dict, field: str
) -> None:
    answer = worker.runsync(job_input)
    assert answer["status"] == "FAILED"
    assert field in answer["error"], answer["error"]
    assert worker.process is not None and worker.process.poll() is None


def test_big_audio_goes_to_s3_and_its_presigned_url_serves_it(
    worker_release: dict[str, str], seaweed: SeaweedServer, tmp_path: Path
) -> None:
    bucket = {
        "PODENV_OUTPUT_BUCKET": seaweed.bucket,
        "PODENV_INLINE_MAX_BYTES": "1000",
        "BUCKET_ENDPOINT_URL": seaweed.environment["AWS_ENDPOINT_URL"],
        "BUCKET_ACCESS_KEY_ID": seaweed.environment["AWS_ACCESS_KEY_ID"],
        "BUCKET_SECRET_ACCESS_KEY": seaweed.environment["AWS_SECRET_ACCESS_KEY"],
    }
    with booted_worker(worker_release, tmp_path / "podenv", bucket) as running:
        answer = running.runsync({"name": "Ada", "seconds": 1.0})
    assert answer["status"] == "COMPLETED", answer
    audio = answer["output"]["audio"]
    assert "base64" not in audio and audio["url"].startswith(seaweed.environment["AWS_ENDPOINT_URL"])
    assert answer["id"] in audio["url"]
    with urllib.request.urlopen(audio["url"], timeout=30) as response:
        data = response.read()
    assert len(data) == audio["bytes"] == 44 + 2 * 16000 and data[:4] == b"RIFF"
    assert answer["output"]["timings"]["upload"] > 0


def test_the_worker_never_sees_the_store_credentials(worker: LocalWorker, worker_release) -> None:
    answer = worker.runsync({"name": "Ada"})
    assert worker_release["AWS_SECRET_ACCESS_KEY"] not in json.dumps(answer)
    assert worker_release["AWS_SECRET_ACCESS_KEY"] not in worker.log_text()


def test_a_missing_model_cache_stops_the_worker_at_startup_without_a_download(
    worker_release: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "podenv"
    with booted_worker(worker_release, root):
        pass
    for snapshot in root.glob("layers/*/models--podenv--demo-model/snapshots/r1"):
        shutil.rmtree(snapshot)
    # Any download attempt would go through this dead proxy and fail loudly in the log.
    dead_proxy = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    with pytest.raises(LocalWorkerError, match="exited with code 1") as failure:
        booted_worker(worker_release, root, dead_proxy).start()
    message = str(failure.value)
    assert "model demo-model (podenv/demo-model@r1) is missing" in message
    assert "never downloads" in message
    assert "127.0.0.1:9" not in message and "worker_ready" not in message


def test_test_input_runs_one_job_locally_and_exits(worker_release: dict[str, str], tmp_path: Path) -> None:
    """`--test_input`, as the runpod SDK documents it: one job, its result in the log, exit 0."""
    environment = {key: value for key, value in worker_release.items() if key != "store"}
    command = [*PODENV, "boot", "--root", str(tmp_path / "podenv"), "--env", "demo"]
    command += ["--store", worker_release["store"], "--exec", "--", "python", "-m", "worker.handler"]

    def run_one(job_input: dict) -> subprocess.CompletedProcess[str]:
        test_input = ["--test_input", json.dumps({"input": job_input})]
        return subprocess.run(
            [*command, *test_input],
            capture_output=True,
            text=True,
            env=environment,
            cwd=REPOSITORY,
            check=False,
        )

    good = run_one({"name": "Test"})
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert "hello Test from greeting 1.0" in good.stdout
    bad = run_one({"name": ""})
    assert bad.returncode == 1 and "input.name: String should have at least 1 character" in bad.stdout
