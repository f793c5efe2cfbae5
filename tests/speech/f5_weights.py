"""Small random F5-TTS and Vocos weights in the real release layout; run in the speech venv.

    build/speech-venv/bin/python tests/speech/f5_weights.py OUT ARCH_JSON

writes ``OUT/f5-tts/F5TTS_v1_Base/{model_1250000.safetensors,vocab.txt}`` (the files of the
SWivid/F5-TTS snapshot the release pins) and ``OUT/vocos/{config.yaml,pytorch_model.bin}``
(charactr/vocos-mel-24khz). The checkpoint is built from f5-tts's own classes with the
architecture F5TTS_v1_Base.yaml gives, overridden by ARCH_JSON (a tiny model), and saved as the
released safetensors are: the EMA state dict (``ema_model.`` keys, ``initted``, ``step``), which
``f5_tts.infer.utils_infer.load_checkpoint`` strips. The vocab is the one f5-tts ships (the same
as the release's F5TTS_v1_Base/vocab.txt). Vocos gets the real config with a smaller backbone
(``Vocos.from_hparams`` builds from config.yaml); its state dict is saved whole, as the hub's is.
Prints the parameter counts and file sizes as JSON.
"""

import json
import shutil
import sys
from importlib.resources import files
from pathlib import Path

import torch
import yaml
from f5_tts.model import CFM
from f5_tts.model.utils import get_tokenizer
from hydra.utils import get_class
from omegaconf import OmegaConf
from safetensors.torch import save_file
from vocos import Vocos

# charactr/vocos-mel-24khz's config.yaml, with a 1-layer, 32-wide backbone instead of 8 x 512.
VOCOS_CONFIG = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def perturb(module: torch.nn.Module) -> None:
    """Random values in every parameter, the zero-initialised output layers included, so each
    layer shapes the output (a fresh DiT's zeroed projection would make it ignore its input)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)


def main(out: Path, arch_override: dict) -> dict:
    torch.manual_seed(0)
    checkpoint_dir = out / "f5-tts" / "F5TTS_v1_Base"
    checkpoint_dir.mkdir(parents=True)
    vocab = checkpoint_dir / "vocab.txt"
    shutil.copyfile(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), vocab)
    vocab_char_map, vocab_size = get_tokenizer(str(vocab), "custom")

    config = OmegaConf.load(str(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml"))).model
    arch = {**OmegaConf.to_container(config.arch, resolve=True), **arch_override}
    mel = config.mel_spec
    model = CFM(
        transformer=get_class(f"f5_tts.model.{config.backbone}")(
            **arch, text_num_embeds=vocab_size, mel_dim=mel.n_mel_channels
        ),
        mel_spec_kwargs={
            "n_fft": mel.n_fft,
            "hop_length": mel.hop_length,
            "win_length": mel.win_length,
            "n_mel_channels": mel.n_mel_channels,
            "target_sample_rate": mel.target_sample_rate,
            "mel_spec_type": mel.mel_spec_type,
        },
        vocab_char_map=vocab_char_map,
    )
    perturb(model)
    ema = {f"ema_model.{key}": value.contiguous() for key, value in model.state_dict().items()}
    ema["initted"] = torch.tensor(True)
    ema["step"] = torch.tensor(1_250_000)
    checkpoint = checkpoint_dir / "model_1250000.safetensors"
    save_file(ema, str(checkpoint))

    vocos_dir = out / "vocos"
    vocos_dir.mkdir()
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS_CONFIG, sort_keys=False))
    vocoder = Vocos.from_hparams(str(vocos_dir / "config.yaml"))
    perturb(vocoder)
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")
    return {
        "f5_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "f5_checkpoint_bytes": checkpoint.stat().st_size,
        "vocos_parameters": sum(parameter.numel() for parameter in vocoder.parameters()),
        "vocos_bytes": (vocos_dir / "pytorch_model.bin").stat().st_size,
        "arch": arch,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), json.loads(sys.argv[2]))))
