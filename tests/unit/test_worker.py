"""The handler's logic in-process: release reading, model resolution, plugin loading, input
validation, job failures, audio in and out. The served path (runpod SDK, packed env) is in
tests/integration/test_handler.py."""

import asyncio
import base64
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.manifests import example_manifest
from worker import audio, handler, outputs
from worker.audio import InputError, fetch_audio
from worker.models import PLUGINS, UnknownPluginError, plugin_class
from worker.models.base import Audio
from worker.release import ReleaseError, read_release, resolve_model

REVISION = "84e5a410d9cead4de2f847e7c9369a6440bdfaca"


def model_layer(name: str, plugin: str | None, target: str = "hf-hub", **model: object) -> dict:
    layer = example_manifest()["layers"][1]
    layer.update(name=name, target=target)
    layer["model"] = {"id": f"org/{name}", "source": "hf", "revision": REVISION, **model}
    if plugin is not None:
        layer["model"]["plugin"] = plugin
    return layer


def write_release(path: Path, layers: list[dict]) -> Path:
    document = example_manifest()
    document["layers"] = [document["layers"][0], *layers]
    path.write_text(json.dumps(document))
    return path


def hub_snapshot(cache: Path, name: str) -> Path:
    snapshot = cache / f"models--org--{name}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLUGINS, "echo", "tests.unit.worker_plugins:EchoPlugin")
    monkeypatch.setitem(PLUGINS, "broken", "tests.unit.worker_plugins:BrokenPlugin")
    monkeypatch.setitem(PLUGINS, "parallel", "tests.unit.worker_plugins:ParallelEchoPlugin")


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "PODENV_DEVICE": "cpu",
    }


def started(tmp_path: Path, environ: dict[str, str], layers: list[dict]) -> handler.Worker:
    release = write_release(tmp_path / "release.json", layers)
    return handler.start_worker({**environ, "PODENV_RELEASE": str(release)})


# Release and models


def test_without_podenv_release_the_worker_says_how_to_start() -> None:
    with pytest.raises(ReleaseError, match="PODENV_RELEASE is not set: start the worker with `podenv boot"):
        read_release(None)


def test_a_model_layer_without_a_plugin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match=r"model layer m of .* names no plugin"):
        read_release(str(write_release(tmp_path / "r.json", [model_layer("m", None)])))


def test_release_groups_models_by_plugin_and_has_the_file_digest(tmp_path: Path) -> None:
    path = write_release(
        tmp_path / "r.json", [model_layer("a", "echo"), model_layer("b", "x"), model_layer("c", "echo")]
    )
    release = read_release(str(path))
    assert {name: [m.name for m in models] for name, models in release.plugins().items()} == {
        "echo": ["a", "c"],
        "x": ["b"],
    }
    assert release.label == "tts 1.0.0" and release.digest.startswith("sha256:")


def test_models_resolve_to_the_hub_snapshot_and_the_torch_file(tmp_path: Path, environ) -> None:
    snapshot = hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    checkpoint = Path(environ["TORCH_HOME"]) / "hub" / "checkpoints" / "w.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"w")
    path = write_release(
        tmp_path / "r.json",
        [
            model_layer("a", "echo", options={"size": "tiny"}),
            model_layer("w", "echo", "torch-hub", filename="hub/checkpoints/w.pth"),
        ],
    )
    first, second = (resolve_model(model, environ) for model in read_release(str(path)).models)
    assert (first.path, first.options, first.revision) == (snapshot, {"size": "tiny"}, REVISION)
    assert second.path == checkpoint and second.target == "torch-hub"


def test_a_missing_snapshot_names_the_model_and_says_nothing_is_downloaded(tmp_path: Path, environ) -> None:
    model = read_release(str(write_release(tmp_path / "r.json", [model_layer("a", "echo")]))).models[0]
    with pytest.raises(ReleaseError, match=rf"model a \(org/a@{REVISION}\) is missing: .* never downloads"):
        resolve_model(model, environ)


# Loading


def test_each_plugin_loads_once_with_its_models(tmp_path: Path, environ, plugins) -> None:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "b")
    worker = started(tmp_path, environ, [model_layer("a", "echo"), model_layer("b", "echo")])
    assert worker.plugin_loads == {"echo": 1}
    assert [model.name for model in worker.plugins["echo"].models] == ["a", "b"]
    assert worker.device == "cpu"


def test_a_required_plugin_that_fails_to_load_stops_the_worker(tmp_path: Path, environ, plugins) -> None:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    with pytest.raises(
        handler.WorkerStartError, match="plugin broken failed to load: OSError: weights are corrupt"
    ):
        started(tmp_path, environ, [model_layer("a", "broken")])


def test_an_optional_plugin_that_fails_is_skipped_and_its_jobs_say_why(
    tmp_path: Path, environ, plugins
) -> None:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "b")
    worker = started(tmp_path, environ, [model_layer("a", "echo"), model_layer("b", "broken", optional=True)])
    assert list(worker.plugins) == ["echo"] and "weights are corrupt" in worker.skipped["broken"]
    with pytest.raises(InputError, match=r"input\.plugin: 'broken' is not loaded on this worker"):
        worker.parse({"plugin": "broken", "text": "x"})


def test_an_unknown_plugin_is_named_with_the_known_ones() -> None:
    with pytest.raises(UnknownPluginError, match="plugin 'nope', which this worker lacks"):
        plugin_class("nope")


def test_a_release_without_models_has_nothing_to_serve(tmp_path: Path, environ) -> None:
    with pytest.raises(handler.WorkerStartError, match="no model layer with a plugin"):
        started(tmp_path, environ, [])


# Jobs


@pytest.fixture
def echo_worker(tmp_path: Path, environ, plugins) -> handler.Worker:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    return started(tmp_path, environ, [model_layer("a", "echo")])


def run_job(worker: handler.Worker, job_input: object) -> dict:
    return asyncio.run(worker.handle({"id": "job-1", "input": job_input}))


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        ("text", "input: must be a JSON object."),
        ({}, "input.text: Field required"),
        ({"text": "a", "repeat": 9}, "input.repeat: Input should be less than or equal to 3"),
        ({"text": "a", "colour": 1}, "input.colour: Extra inputs are not permitted"),
        ({"text": "", "repeat": "x"}, "input.text: String should have at least 1 character; input.repeat:"),
        ({"plugin": "other", "text": "a"}, "input.plugin: 'other' is not one of: echo."),
    ],
)
def test_bad_input_is_a_job_error_naming_each_field(echo_worker, job_input, message: str) -> None:
    result = run_job(echo_worker, job_input)
    assert list(result) == ["error"] and result["error"].startswith(message)


def test_a_job_returns_its_data_timings_and_worker_counters(echo_worker) -> None:
    result = run_job(echo_worker, {"text": "ab", "repeat": 2})
    assert result["text"] == "abab"
    assert result["audio"] == {
        "format": "wav",
        "bytes": 104,
        "base64": base64.b64encode(b"RIFF" + b"\0" * 100).decode(),
    }
    assert set(result["timings"]) == {"queue", "input", "inference", "upload"}
    assert result["worker"]["plugin_loads"] == {"echo": 1} and result["worker"]["jobs_served"] == 1


def test_a_plugin_error_is_the_jobs_error_and_the_worker_keeps_serving(echo_worker) -> None:
    failed = run_job(echo_worker, {"text": "a", "fail_with": "shape mismatch"})
    assert failed == {"error": "echo failed: RuntimeError: shape mismatch"}
    assert run_job(echo_worker, {"text": "a"})["text"] == "a"


def test_a_cuda_error_that_poisons_the_process_asks_runpod_for_a_fresh_worker(echo_worker) -> None:
    failed = run_job(
        echo_worker, {"text": "a", "fail_with": "CUDA error: an illegal memory access was encountered"}
    )
    assert failed["refresh_worker"] is True and "illegal memory access" in failed["error"]


@pytest.mark.parametrize(
    ("message", "fatal"),
    [
        ("CUDA error: device-side assert triggered", True),
        ("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm", True),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("index out of range", False),
    ],
)
def test_which_errors_are_fatal_to_the_cuda_context(message: str, fatal: bool) -> None:
    assert handler.is_fatal_cuda_error(RuntimeError(message)) is fatal


def test_concurrency_is_what_the_environment_says(tmp_path: Path, environ, plugins) -> None:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    release = write_release(tmp_path / "release.json", [model_layer("a", "echo")])
    worker = handler.start_worker({**environ, "PODENV_RELEASE": str(release), "PODENV_CONCURRENCY": "4"})
    assert worker.concurrency(1) == 4


@pytest.mark.parametrize(("plugin", "serialised"), [("echo", True), ("parallel", False)])
def test_jobs_wait_for_a_plugin_that_is_not_thread_safe(
    tmp_path: Path, environ, plugins, plugin: str, serialised: bool
) -> None:
    """Two jobs at once (concurrency 2): the second queues behind the first only if it must."""
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    release = write_release(tmp_path / "release.json", [model_layer("a", plugin)])
    worker = handler.start_worker({**environ, "PODENV_RELEASE": str(release), "PODENV_CONCURRENCY": "2"})

    async def two_jobs() -> list[dict]:
        jobs = [worker.handle({"id": f"job-{n}", "input": {"text": "a", "sleep": 0.5}}) for n in (1, 2)]
        return await asyncio.gather(*jobs)

    queues = sorted(result["timings"]["queue"] for result in asyncio.run(two_jobs()))
    assert queues[0] < 0.1
    assert (queues[1] >= 0.4) is serialised


# Audio in and out


def test_base64_and_data_uris_become_files(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"RIFFdata").decode()
    assert fetch_audio(encoded, tmp_path, "audio").read_bytes() == b"RIFFdata"
    assert fetch_audio(f"data:audio/wav;base64,{encoded}", tmp_path, "ref").read_bytes() == b"RIFFdata"


@pytest.mark.parametrize("source", ["not base64 !", "", "data:audio/wav;base64,@@@"])
def test_unusable_audio_names_the_field(tmp_path: Path, source: str) -> None:
    with pytest.raises(InputError, match=r"^reference_audio: "):
        fetch_audio(source, tmp_path, "reference_audio")


@pytest.fixture
def http_files(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_audio_urls_are_fetched_and_limited(tmp_path: Path, http_files, monkeypatch) -> None:
    monkeypatch.setenv("PODENV_AUDIO_PRIVATE_URLS", "1")  # the test's server is on loopback
    served, base = http_files
    (served / "a.wav").write_bytes(b"x" * 5000)
    work = tmp_path / "work"
    work.mkdir()
    assert fetch_audio(f"{base}/a.wav", work, "audio").read_bytes() == b"x" * 5000
    with pytest.raises(InputError, match="audio: fetching the URL failed with HTTP 404"):
        fetch_audio(f"{base}/missing.wav", work, "audio")
    monkeypatch.setattr(audio, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(InputError, match="audio: the audio at the URL is over 1000 bytes"):
        fetch_audio(f"{base}/a.wav", work, "audio")


def test_audio_goes_inline_without_a_complete_bucket_setting(monkeypatch) -> None:
    monkeypatch.setenv("PODENV_OUTPUT_BUCKET", "outputs")
    for name in ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(outputs, "INLINE_MAX_BYTES", 1)
    assert outputs.output_bucket() is None
    delivered = outputs.deliver_audio(Audio(b"abc"), "job")
    assert delivered == {"format": "wav", "bytes": 3, "base64": "YWJj"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a.wav",
        "http://localhost:{port}/a.wav",
        "http://[::1]:{port}/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.wav",
    ],
)
def test_audio_urls_leading_to_private_addresses_are_refused(
    url: str, tmp_path: Path, http_files, monkeypatch
) -> None:
    monkeypatch.delenv("PODENV_AUDIO_PRIVATE_URLS", raising=False)
    served, base = http_files
    (served / "a.wav").write_bytes(b"secret")
    port = base.rsplit(":", 1)[1]
    with pytest.raises(InputError, match=r"^audio: the URL (is refused: it leads to|could not be fetched)"):
        fetch_audio(url.format(port=port), tmp_path, "audio")
    assert not (tmp_path / "audio.audio").exists() or (tmp_path / "audio.audio").read_bytes() == b""


def test_a_redirect_to_a_private_address_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Every connection is checked, a redirect's too: 127.0.0.1 plays a public server that
    redirects to 127.0.0.2, which plays the metadata service."""
    monkeypatch.delenv("PODENV_AUDIO_PRIVATE_URLS", raising=False)
    monkeypatch.setattr(audio, "_is_public", lambda address: str(address) == "127.0.0.1")

    secret = ThreadingHTTPServer(("127.0.0.2", 0), SimpleHTTPRequestHandler)
    target = f"http://127.0.0.2:{secret.server_address[1]}/secret"

    class Redirect(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

    public = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (secret, public):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InputError, match=r"is refused: it leads to 127\.0\.0\.2"):
            fetch_audio(f"http://127.0.0.1:{public.server_address[1]}/a.wav", tmp_path, "audio")
    finally:
        for server in (secret, public):
            server.shutdown()


def test_a_job_over_runpods_payload_limit_is_refused(tmp_path: Path, environ, plugins) -> None:
    hub_snapshot(Path(environ["HF_HUB_CACHE"]), "a")
    release = write_release(tmp_path / "release.json", [model_layer("a", "echo")])
    worker = handler.start_worker({**environ, "PODENV_RELEASE": str(release)})
    big = {"text": "a", "padding": "x" * (handler.PAYLOAD_LIMIT + 1)}
    result = asyncio.run(worker.handle({"id": "big", "input": big}))
    assert "over RunPod's payload limits" in result["error"]
