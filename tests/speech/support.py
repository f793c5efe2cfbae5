"""Speech plugin tests: the CPU speech venv, a model-only release booted by podenv, the handler.

The plugins run in their own venv (``build/speech-venv``, from ``requirements.txt``: torch
2.8.0 and the same f5-tts / whisperx versions as pixi.toml), never in podenv's dev env. The
models a fixture writes go through podenv for real: packed as layers, published to a file://
store, booted onto a volume, so the handler reads the caches exactly as on RunPod.
"""

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devkit.localworker import LocalWorker
from podenv.boot import BootOptions, BootReport, prepare, worker_environment
from podenv.envspec import ModelSpec
from podenv.manifest import Manifest
from podenv.models import build_model_layer
from podenv.release import layer_document, publish
from podenv.store import open_store
from tests.manifests import example_manifest

REPOSITORY = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
SPEECH_VENV = REPOSITORY / "build" / "speech-venv"


def ensure_speech_python() -> Path:
    """The speech venv's python, (re)built with uv when requirements.txt changed."""
    python = SPEECH_VENV / "bin" / "python"
    stamp = SPEECH_VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--clear", "--python", sys.executable, str(SPEECH_VENV)], check=True)
    install = ["pip", "install", "--python", str(python), "--require-hashes", "-r", str(REQUIREMENTS)]
    subprocess.run([*uv, *install], check=True)
    # whisperx.load_audio runs `ffmpeg`; imageio-ffmpeg ships a static one under another name.
    link = "import imageio_ffmpeg, os, sys; os.symlink(imageio_ffmpeg.get_ffmpeg_exe(), sys.argv[1])"
    (python.parent / "ffmpeg").unlink(missing_ok=True)
    run_in_speech_venv(python, link, str(python.parent / "ffmpeg"))
    stamp.write_text(wanted)
    return python


def run_in_speech_venv(python: Path, script: str, *args: str) -> str:
    """Run a Python snippet in the speech venv (fixtures that write weights); its stdout."""
    done = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, cwd=REPOSITORY, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"speech venv script failed:\n{done.stderr[-4000:]}")
    return done.stdout


def boot_model_release(work: Path, name: str, models: list[dict[str, Any]]) -> dict[str, str]:
    """Publish ``models`` (model entries as in envs/<name>.yaml) as release ``name`` 1.0.0 and
    boot it; see :func:`boot_model_specs`."""
    specs = [ModelSpec(m["name"], m["source"], m["id"], m["revision"], m["target"], m) for m in models]
    return boot_model_specs(work, name, specs)


def boot_model_specs(work: Path, name: str, specs: Sequence[ModelSpec]) -> dict[str, str]:
    """Build each model layer with podenv's builder (any source), publish them as release
    ``name`` 1.0.0 to a file:// store, boot it onto a volume under ``work`` and return the
    environment ``podenv boot --exec`` gives the worker."""
    (work / "store").mkdir(parents=True, exist_ok=True)
    store = open_store(f"file://{work / 'store'}")
    layers, archives = [], {}
    for spec in specs:
        archive = work / "layers" / f"{spec.name}.tar.zst"
        archive.parent.mkdir(parents=True, exist_ok=True)
        info = build_model_layer(spec, Path("/"), archive)
        layers.append(layer_document(info, "model", spec.name, spec.target, {"model": spec.layer_document}))
        archives[info.digest] = archive
    document = example_manifest()
    document.update(name=name, cuda=None, layers=layers)
    publish(store, Manifest.from_document(document), archives)
    options = BootOptions(env=name, root=work / "volume", store_url=store.url, version="1.0.0")
    ready = prepare(options, BootReport(env=name))
    return worker_environment(ready, {"PATH": "/usr/bin:/bin", "HOME": str(work)})


def speech_worker(
    python: Path, environment: dict[str, str], log_path: Path, device: str = "cpu"
) -> LocalWorker:
    """The handler under the speech venv's python, on the release ``environment`` describes."""
    env = dict(environment, PODENV_LOG_FORMAT="json", PODENV_DEVICE=device, PYTHONUNBUFFERED="1")
    # The tests serve job audio from loopback, which a worker refuses by default (SSRF guard).
    env["PODENV_AUDIO_PRIVATE_URLS"] = "1"
    # The venv's bin first: its `ffmpeg` (imageio-ffmpeg) and console scripts.
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    command = [str(python), "-m", "worker.handler"]
    return LocalWorker(command, env, log_path, cwd=REPOSITORY, start_timeout=600)


def plugin_load_events(worker: LocalWorker) -> list[dict[str, Any]]:
    return [event for event in worker.log_events() if event.get("event") == "plugin_loaded"]
