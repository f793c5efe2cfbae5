"""WhisperX: speech in, text segments with word timings out (faster-whisper + wav2vec2 alignment).

The plugin's model layers are told apart by ``options.role`` (inferred when absent):

- ``asr`` (default for ``hf-hub``): a faster-whisper (CTranslate2) snapshot with ``model.bin``,
  ``config.json`` and ``tokenizer.json``. ``options`` may set ``compute_type`` (default float16
  on cuda, int8 on cpu), ``cpu_threads``, ``language`` (a fixed language, no detection) and
  ``asr_options`` / ``vad_options`` (passed to ``whisperx.load_model``).
- ``align`` (default for ``torch-hub``): the wav2vec2 alignment model of one language
  (``options.language``, required). A torchaudio pipeline checkpoint (``torch-hub``, id
  ``torchaudio/<PIPELINE>``, read from torch.hub's checkpoint dir as the pipeline names it) or a
  Hugging Face ``Wav2Vec2ForCTC`` snapshot with its processor (``hf-hub``).
- ``nltk-data``: NLTK's ``punkt_tab`` package, the file ``<root>/tokenizers/punkt_tab.zip`` (or
  its unzipped directory). ``whisperx.align`` splits sentences with it and, when NLTK cannot find
  it, calls ``nltk.download`` in the middle of a job; so alignment needs this layer and the
  worker checks at load that every alignment language's Punkt model is there.

The voice activity detector is pyannote's, with the weights bundled in the whisperx wheel.
Nothing here downloads or phones home: every model is a local path, and the telemetry of
pyannote.audio and onnxruntime is turned off before they are imported.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from worker.audio import InputError
from worker.layout import HF_HUB_TARGET, TORCH_HUB_TARGET
from worker.models.base import JobContext, ModelFiles, Plugin, PluginInput, PluginOutput

SAMPLE_RATE = 16_000
# faster-whisper falls back to fetching the tokenizer from the hub when tokenizer.json is absent.
_ASR_FILES = ("model.bin", "config.json", "tokenizer.json")
_ROLES = ("asr", "align", "nltk-data")


class WhisperXInput(PluginInput):
    audio: str = Field(
        min_length=1,
        description="the speech: an http(s) URL, a data: URI or bare base64 of any format ffmpeg reads",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}$",
        description=(
            "ISO 639-1 code of the speech; detected when omitted (multilingual models). With "
            "word_timestamps, the release must ship an alignment model for it."
        ),
    )
    word_timestamps: bool = Field(
        default=True, description="align the transcript to the audio for per-word start, end and score"
    )
    batch_size: int = Field(default=8, ge=1, le=64, description="speech chunks decoded at once")
    initial_prompt: str | None = Field(
        default=None, max_length=1000, description="text that conditions the first window (names, jargon)"
    )


class ModelSetupError(RuntimeError):
    """The release's whisperx layers do not make a usable set; the message names the layer."""


@dataclass
class _Layers:
    asr: ModelFiles
    align: dict[str, ModelFiles] = field(default_factory=dict)
    nltk_roots: list[Path] = field(default_factory=list)


def _role(model: ModelFiles) -> str:
    role = model.options.get("role")
    if role is None:
        role = "asr" if model.target == HF_HUB_TARGET else "align"
    if role not in _ROLES:
        raise ModelSetupError(f"model {model.name}: options.role '{role}' is not one of {', '.join(_ROLES)}.")
    return role


def _nltk_root(model: ModelFiles) -> Path:
    """The NLTK data root of a ``nltk-data`` layer: the directory holding ``tokenizers/punkt_tab.zip``
    (or ``tokenizers/punkt_tab/``), where the files really are. NLTK 3.10 refuses to read a file
    whose real path is outside every root on ``nltk.data.path``, and a booted release links each
    file into its layer's directory, so the root is found from the resolved file."""
    path = model.path
    candidates = [path] if path.is_file() else sorted(path.glob("**/tokenizers/punkt_tab*"))
    for candidate in candidates:
        inside = sorted(item for item in candidate.rglob("*") if item.is_file()) if candidate.is_dir() else []
        anchor = inside[0] if inside else candidate
        for parent in anchor.resolve().parents:
            if parent.name == "tokenizers":
                return parent.parent
    raise ModelSetupError(
        f"model {model.name}: {path} holds no tokenizers/punkt_tab.zip or tokenizers/punkt_tab/ of NLTK data."
    )


def classify(models: list[ModelFiles]) -> _Layers:
    """The release's layers by role, checked without importing any model library."""
    asr: list[ModelFiles] = []
    align: dict[str, ModelFiles] = {}
    nltk_roots: list[Path] = []
    for model in models:
        role = _role(model)
        if role == "asr":
            missing = [name for name in _ASR_FILES if not (model.path / name).is_file()]
            if missing:
                raise ModelSetupError(
                    f"model {model.name}: the faster-whisper snapshot {model.path} "
                    f"lacks {', '.join(missing)}."
                )
            asr.append(model)
        elif role == "align":
            language = model.options.get("language")
            if not isinstance(language, str) or not language:
                raise ModelSetupError(f"model {model.name}: an alignment model needs options.language.")
            if language in align:
                raise ModelSetupError(
                    f"models {align[language].name} and {model.name} both align language '{language}'."
                )
            align[language] = model
        else:
            nltk_roots.append(_nltk_root(model))
    if len(asr) != 1:
        names = ", ".join(model.name for model in asr) or "none"
        raise ModelSetupError(
            f"whisperx needs exactly one faster-whisper (asr) model; the release has: {names}."
        )
    if align and not nltk_roots:
        raise ModelSetupError(
            "whisperx alignment splits sentences with NLTK's punkt_tab, which no layer of the release ships "
            "(options.role: nltk-data); without it whisperx.align would download it during a job."
        )
    return _Layers(asr[0], align, nltk_roots)


def use_nltk_data(roots: list[Path], languages: list[str]) -> None:
    """Put the release's NLTK data first on NLTK's path and check each Punkt model loads from it."""
    import nltk
    from whisperx.utils import PUNKT_LANGUAGES

    for root in reversed(roots):
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
    for language in languages:
        punkt = PUNKT_LANGUAGES.get(language, "english")  # whisperx.align's own choice
        try:
            nltk.data.find(f"tokenizers/punkt_tab/{punkt}/")  # as whisperx.align will look it up
        except LookupError:
            raise ModelSetupError(
                f"NLTK punkt_tab has no '{punkt}' model (for aligning '{language}') under "
                f"{', '.join(map(str, roots))}."
            ) from None


def _torchaudio_checkpoint(model: ModelFiles, pipeline: Any) -> Path:
    """Where torch.hub will read the pipeline's weights; a missing file is an error, never a download."""
    filename = pipeline._path.rsplit("/", 1)[-1]
    if model.path.is_file():
        checkpoint = model.path
        if checkpoint.name != filename:
            raise ModelSetupError(f"model {model.name}: {checkpoint} is not the pipeline's file {filename}.")
    else:  # the layer named no file: model.path is TORCH_HOME, where torch.hub keeps hub/checkpoints
        checkpoint = model.path / "hub" / "checkpoints" / filename
    if not checkpoint.is_file():
        raise ModelSetupError(
            f"model {model.name}: {checkpoint} does not exist (the worker never downloads)."
        )
    return checkpoint


def load_aligner(language: str, model: ModelFiles, device: str) -> tuple[Any, dict[str, Any]]:
    """``whisperx.load_align_model`` on the layer's own files: a torchaudio pipeline reading its
    checkpoint where the layer put it, or a Hugging Face snapshot directory, offline."""
    import torchaudio
    import whisperx

    if model.target == TORCH_HUB_TARGET:
        name = model.id.split("/", 1)[-1]
        if not model.id.startswith("torchaudio/") or name not in torchaudio.pipelines.__all__:
            raise ModelSetupError(
                f"model {model.name}: a torch-hub alignment model's id must be torchaudio/<pipeline>, "
                f"not {model.id}."
            )
        checkpoint = _torchaudio_checkpoint(model, getattr(torchaudio.pipelines, name))
        return whisperx.load_align_model(language, device, model_name=name, model_dir=str(checkpoint.parent))
    return whisperx.load_align_model(language, device, model_name=str(model.path), model_cache_only=True)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, 3)


def _segment(segment: dict[str, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {
        "start": _number(segment.get("start")),
        "end": _number(segment.get("end")),
        "text": str(segment.get("text", "")).strip(),
    }
    if "words" in segment:
        described["words"] = [
            {
                "word": str(word["word"]),
                "start": _number(word.get("start")),
                "end": _number(word.get("end")),
                "score": _number(word.get("score")),
            }
            for word in segment["words"]
        ]
    return described


class WhisperXPlugin(Plugin[WhisperXInput]):
    name: ClassVar[str] = "whisperx"
    Input = WhisperXInput
    # whisperx's pipeline keeps per-call state (tokenizer, options): one job at a time.
    thread_safe: ClassVar[bool] = False

    def load(self, models: list[ModelFiles], device: str) -> None:
        layers = classify(models)
        # A worker never calls out. Both are read when the library is first imported:
        # - pyannote.audio 4 sends usage telemetry to its own server unless this is false;
        # - onnxruntime (1.32, imported by pyannote.audio.pipelines) starts a telemetry uploader
        #   to Microsoft's event collector on Linux unless ORT_DISABLE_TELEMETRY is set (its
        #   Python disable_telemetry_events() does not stop the upload).
        os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
        os.environ["ORT_DISABLE_TELEMETRY"] = "1"
        import whisperx
        from faster_whisper.tokenizer import _LANGUAGE_CODES
        from whisperx.asr import WhisperModel

        if layers.align:
            use_nltk_data(layers.nltk_roots, list(layers.align))
        self._whisperx = whisperx
        self._device = device
        asr = layers.asr
        kind, _, index = device.partition(":")
        compute_type = asr.options.get("compute_type", "float16" if kind == "cuda" else "int8")
        whisper = WhisperModel(
            str(asr.path),
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            local_files_only=True,
            cpu_threads=int(asr.options.get("cpu_threads", os.cpu_count() or 4)),
        )
        self._multilingual = bool(whisper.model.is_multilingual)
        # An English-only model cannot detect a language (faster-whisper raises): it is English.
        preset = asr.options.get("language") or (None if self._multilingual else "en")
        self._pipeline = whisperx.load_model(
            str(asr.path),
            kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            model=whisper,
            asr_options=asr.options.get("asr_options"),
            vad_method="pyannote",  # bundled weights; "silero" would torch.hub.load from GitHub
            vad_options=asr.options.get("vad_options"),
            language=preset,
        )
        self._languages = set(_LANGUAGE_CODES) if self._multilingual else {"en"}
        self._options = self._pipeline.options
        self._aligners: dict[str, tuple[Any, dict[str, Any]]] = {}
        for language, model in layers.align.items():
            self._aligners[language] = load_aligner(language, model, device)
        self._asr = asr
        self._warm_up(preset or "en")

    def _warm_up(self, language: str) -> None:
        """One pass through each model on a second of faint noise, so that the first job does not
        pay for what the libraries initialise on first use (CTranslate2's decoder, the VAD, the
        aligner, NLTK's Punkt model): bench/first_job.py measured 1.26x a later job without it."""
        import numpy as np

        audio = (0.01 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
        self._pipeline.transcribe(audio, batch_size=1, language=language)
        # The VAD finds no speech in noise: decode once without it, as a job's speech would be.
        segments, _ = self._pipeline.model.transcribe(audio, language=language, beam_size=1, vad_filter=False)
        list(segments)
        for model, metadata in self._aligners.values():
            segment = {"start": 0.0, "end": 1.0, "text": "warm up"}
            self._whisperx.align([segment], model, metadata, audio, self._device)

    def _language(self, request: WhisperXInput) -> str | None:
        language = request.language or self._pipeline.preset_language
        if language is None:
            return None
        if language not in self._languages:
            if not self._multilingual:
                raise InputError(
                    f"input.language: this worker's model transcribes English only, not '{language}'."
                )
            raise InputError(f"input.language: '{language}' is not a language Whisper knows.")
        if request.word_timestamps and request.language and language not in self._aligners:
            shipped = ", ".join(sorted(self._aligners)) or "none"
            raise InputError(
                f"input.language: no alignment model for '{language}' in this release "
                f"(it aligns: {shipped}); send word_timestamps: false for a transcript without word timings."
            )
        return language

    def run(self, request: WhisperXInput, context: JobContext) -> PluginOutput:
        language = self._language(request)
        source = context.fetch_audio(request.audio, "audio")
        stages: dict[str, float] = {}
        started = time.monotonic()
        try:
            audio = self._whisperx.load_audio(str(source))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1][:300] if str(error).strip() else "no output"
            raise InputError(f"input.audio: ffmpeg cannot decode it as audio ({reason}).") from None
        if audio.size == 0:
            raise InputError("input.audio: the audio has no samples.")
        stages["decode"] = time.monotonic() - started

        started = time.monotonic()
        self._pipeline.options = replace(self._options, initial_prompt=request.initial_prompt)
        try:
            result = self._pipeline.transcribe(audio, batch_size=request.batch_size, language=language)
        finally:
            self._pipeline.options = self._options
        stages["transcribe"] = time.monotonic() - started
        detected = result["language"]
        segments = result["segments"]

        aligned = False
        note = None
        if request.word_timestamps:
            if detected in self._aligners:
                started = time.monotonic()
                model, metadata = self._aligners[detected]
                if segments:
                    aligned_result = self._whisperx.align(segments, model, metadata, audio, self._device)
                    segments = aligned_result["segments"]
                stages["align"] = time.monotonic() - started
                aligned = True
            else:
                note = f"no alignment model for the detected language '{detected}': segments carry no words."
        data: dict[str, Any] = {
            "language": detected,
            "duration_s": round(audio.shape[0] / SAMPLE_RATE, 3),
            "text": " ".join(_segment(segment)["text"] for segment in segments).strip(),
            "segments": [_segment(segment) for segment in segments],
            "aligned": aligned,
            "model": f"{self._asr.id}@{self._asr.revision}",
            "stage_seconds": {stage: round(seconds, 4) for stage, seconds in stages.items()},
        }
        if note:
            data["note"] = note
        return PluginOutput(data)
