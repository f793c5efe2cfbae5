"""F5-TTS: text + a reference voice (audio and its transcript) -> speech, 24 kHz WAV.

Two model layers of the release feed it (``plugin: f5_tts``), told apart by ``options.role``:

- ``role: model`` (the default): the F5-TTS checkpoint and its vocab, e.g. ``SWivid/F5-TTS``
  with ``F5TTS_v1_Base/model_1250000.safetensors`` and ``F5TTS_v1_Base/vocab.txt``. Its
  ``options`` may name another ``config`` (one of f5-tts's own ``f5_tts/configs/*.yaml``),
  other ``checkpoint`` / ``vocab`` paths in the snapshot, and ``arch`` keys that override the
  config's architecture (the tests' tiny model); the defaults are exactly F5TTS_v1_Base.
- ``role: vocoder``: the Vocos mel vocoder snapshot (``charactr/vocos-mel-24khz``:
  ``config.yaml`` + ``pytorch_model.bin``), loaded with ``load_vocoder(is_local=True)``.

Everything goes through f5-tts's own ``f5_tts.infer.utils_infer`` (``load_model``,
``load_vocoder``, ``preprocess_ref_audio_text``, ``infer_process``), offline. The reference
transcript is required: without it f5-tts would fetch ``openai/whisper-large-v3-turbo`` from
the hub to transcribe the reference, and a worker never downloads a model.

torch and f5_tts are imported in :meth:`F5TTSPlugin.load` (9 to 25 s of imports on a 2-core
CPU), so ``python -m worker.handler --describe`` stays quick.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from worker import logs
from worker.audio import InputError
from worker.models.base import Audio, JobContext, ModelFiles, Plugin, PluginInput, PluginOutput

_log = logging.getLogger("podenv.worker.f5_tts")

# f5-tts clips the reference to about 12 s; the first 30 s decoded are more than it can use.
REFERENCE_MAX_S = 30.0
# Shorter than this after f5-tts trims the silence at its edges: no voice to clone.
REFERENCE_MIN_S = 0.5
MAX_SEED = 2**32 - 1
_WARMUP_TEXT = "This sentence warms the model up."

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
ReferenceText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class F5TTSInput(PluginInput):
    text: Text = Field(description="the text to speak (up to 2000 characters; long text is chunked)")
    reference_audio: str = Field(
        min_length=1,
        description="the voice to clone: an http(s) URL, a data: URI or base64 of WAV, FLAC, OGG or "
        "MP3 audio; 3 to 12 s of clean speech works best (f5-tts uses at most about 12 s)",
    )
    reference_text: ReferenceText = Field(
        description="the transcript of reference_audio. Required: the worker does not transcribe "
        "(that would download an ASR model); the whisperx plugin can produce it",
    )
    speed: float = Field(default=1.0, ge=0.3, le=2.0, description="speaking rate; 1.0 is the reference's")
    steps: int = Field(default=32, ge=4, le=64, description="flow-matching steps (nfe_step): quality vs time")
    cfg_strength: float = Field(default=2.0, ge=0.0, le=10.0, description="classifier-free guidance strength")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="random seed; the output reports the one used. Same seed, input and device: same audio "
        "(for text that f5-tts does not split into several chunks)",
    )


class _CheckpointOptions(BaseModel):
    """``options`` of the F5-TTS checkpoint layer; the defaults are the released F5TTS_v1_Base."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["model"] = "model"
    config: str = Field(default="F5TTS_v1_Base", pattern=r"^[A-Za-z0-9_]+$")
    checkpoint: str = "F5TTS_v1_Base/model_1250000.safetensors"
    vocab: str = "F5TTS_v1_Base/vocab.txt"
    arch: dict[str, Any] = Field(default_factory=dict)


class _VocoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["vocoder"]


def _file_in(model: ModelFiles, relative: str, what: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(
            f"model {model.name}: options.{what} must be a path inside the snapshot, not {relative!r}."
        )
    path = model.path.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"model {model.name} ({model.id}@{model.revision}): its {what} {relative} is not in "
            f"{model.path}. The worker never downloads models; publish the release with this file "
            "in the model layer."
        )
    return path


def _options(model: ModelFiles) -> _CheckpointOptions | _VocoderOptions:
    kind = _VocoderOptions if model.options.get("role") == "vocoder" else _CheckpointOptions
    try:
        return kind.model_validate(model.options)
    except ValidationError as error:
        problems = "; ".join(
            f"options.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"model {model.name}: {problems}.") from None


def _one(layers: list[ModelFiles], role: str) -> ModelFiles:
    if len(layers) != 1:
        names = ", ".join(layer.name for layer in layers) or "none"
        raise ValueError(
            f"f5_tts needs exactly one model layer with options.role '{role}' (layers without a role are "
            f"the checkpoint); the release has: {names}."
        )
    return layers[0]


def _read_reference(path: Path, directory: Path) -> Path:
    """The reference as a mono 16-bit WAV file (what f5-tts's preprocessing reads without ffmpeg)."""
    import numpy as np
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as source:
            rate = source.samplerate
            samples = source.read(frames=int(REFERENCE_MAX_S * rate), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise InputError(
            f"reference_audio: not audio this worker can decode (WAV, FLAC, OGG, MP3): {error}."
        ) from None
    mono = samples.mean(axis=1)
    if mono.size < REFERENCE_MIN_S * rate:
        raise InputError(
            f"reference_audio: {mono.size / rate:.2f} s long; "
            f"it needs at least {REFERENCE_MIN_S} s of speech."
        )
    if not np.isfinite(mono).all() or not np.any(mono):
        raise InputError("reference_audio: the audio is silent.")
    wav = directory / "reference.wav"
    soundfile.write(str(wav), np.clip(mono, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return wav


def _wav_bytes(samples: Any, rate: int) -> bytes:
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


class F5TTSPlugin(Plugin[F5TTSInput]):
    name: ClassVar[str] = "f5_tts"
    Input = F5TTSInput
    # f5-tts keeps module-level caches and seeds torch's global generator: one job at a time.
    thread_safe: ClassVar[bool] = False

    def load(self, models: list[ModelFiles], device: str) -> None:
        # Every option and file is checked before the ~25 s of imports, so a bad release fails fast.
        checkpoints: list[tuple[ModelFiles, _CheckpointOptions]] = []
        vocoders: list[ModelFiles] = []
        for model in models:
            parsed = _options(model)
            if isinstance(parsed, _CheckpointOptions):
                checkpoints.append((model, parsed))
            else:
                vocoders.append(model)
        checkpoint = _one([model for model, _ in checkpoints], "model")
        options = checkpoints[0][1]
        vocoder = _one(vocoders, "vocoder")
        checkpoint_file = _file_in(checkpoint, options.checkpoint, "checkpoint")
        vocab_file = _file_in(checkpoint, options.vocab, "vocab")
        for name in ("config.yaml", "pytorch_model.bin"):
            _file_in(vocoder, name, "vocoder file")

        started = time.monotonic()
        from importlib.resources import files

        import torch
        from f5_tts.infer import utils_infer
        from hydra.utils import get_class
        from omegaconf import OmegaConf

        imported = time.monotonic()
        config_file = files("f5_tts").joinpath(f"configs/{options.config}.yaml")
        if not config_file.is_file():
            raise ValueError(
                f"model {checkpoint.name}: options.config {options.config!r} is not a config f5-tts ships."
            )
        config = OmegaConf.load(str(config_file)).model
        mel_spec_type = config.mel_spec.mel_spec_type
        if mel_spec_type != "vocos":
            raise ValueError(
                f"model {checkpoint.name}: config {options.config} needs the {mel_spec_type} vocoder; "
                "only vocos is served."
            )
        arch = {**OmegaConf.to_container(config.arch, resolve=True), **options.arch}

        self._torch, self._utils = torch, utils_infer
        self._device = device
        self._model = utils_infer.load_model(
            get_class(f"f5_tts.model.{config.backbone}"),
            arch,
            str(checkpoint_file),
            mel_spec_type=mel_spec_type,
            vocab_file=str(vocab_file),
            device=device,
        )
        self._vocoder = utils_infer.load_vocoder(
            vocoder_name="vocos", is_local=True, local_path=str(vocoder.path), device=device
        )
        loaded = time.monotonic()
        self._warm_up()
        warmed = time.monotonic()
        logs.event(
            _log,
            f"f5_tts {options.config} ready: imports {imported - started:.1f}s, "
            f"weights {loaded - imported:.1f}s, warm-up {warmed - loaded:.1f}s",
            event="f5_tts_ready",
            config=options.config,
            arch_overrides=options.arch,
            import_seconds=round(imported - started, 3),
            weights_seconds=round(loaded - imported, 3),
            warmup_seconds=round(warmed - loaded, 3),
        )

    def _warm_up(self) -> None:
        """One short synthesis, so lazy initialisation (kernels, caches) is not paid by the first job."""
        torch = self._torch
        generator = torch.Generator().manual_seed(0)
        rate = self._utils.target_sample_rate
        reference = 0.1 * torch.randn(1, rate, generator=generator)
        batches = self._utils.infer_batch_process(
            (reference, rate),
            _WARMUP_TEXT,
            [_WARMUP_TEXT],
            self._model,
            self._vocoder,
            progress=None,
            nfe_step=2,
            device=self._device,
        )
        next(batches)

    def run(self, request: F5TTSInput, context: JobContext) -> PluginOutput:
        from f5_tts.model.utils import seed_everything

        utils = self._utils
        source = context.fetch_audio(request.reference_audio, "reference_audio")
        reference = _read_reference(source, context.workdir)
        seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        seed_everything(seed)
        cache = utils._ref_audio_cache
        cached_before = set(cache)
        try:
            # The transcript is never empty here, so f5-tts does not try to transcribe (a download).
            ref_audio, ref_text = utils.preprocess_ref_audio_text(
                str(reference), request.reference_text, show_info=_log.debug
            )
            self._check_trimmed_reference(ref_audio)
            # f5-tts prints the reference and the job's text: user content stays out of the log.
            with contextlib.redirect_stdout(io.StringIO()):
                wave, rate, _ = utils.infer_process(
                    ref_audio,
                    ref_text,
                    request.text,
                    self._model,
                    self._vocoder,
                    mel_spec_type="vocos",
                    show_info=_log.debug,
                    progress=None,
                    nfe_step=request.steps,
                    cfg_strength=request.cfg_strength,
                    speed=request.speed,
                    device=self._device,
                )
        finally:
            # f5-tts keeps each trimmed reference as a temp file, cached forever: not on a worker.
            for key in set(cache) - cached_before:
                Path(cache.pop(key)).unlink(missing_ok=True)
        if wave is None:
            raise InputError("text: f5-tts found nothing to speak in it.")
        import numpy as np

        if not np.isfinite(wave).all():
            raise RuntimeError("the model produced non-finite audio samples")
        data = {"sample_rate": rate, "duration_s": round(len(wave) / rate, 3), "seed": seed}
        return PluginOutput(data, Audio(_wav_bytes(wave, rate)))

    @staticmethod
    def _check_trimmed_reference(path: str) -> None:
        import soundfile

        info = soundfile.info(path)
        # f5-tts appends 50 ms of silence after trimming the edges.
        if info.duration - 0.05 < REFERENCE_MIN_S:
            raise InputError(
                f"reference_audio: only {max(info.duration - 0.05, 0):.2f} s of sound after trimming "
                f"silence; it needs at least {REFERENCE_MIN_S} s of speech."
            )
