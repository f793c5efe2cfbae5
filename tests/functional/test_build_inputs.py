"""The build box refuses bad input in one sentence, before it writes anything."""

import hashlib
import http.server
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import yaml
import zstandard

from podenv.envbuild import EnvBuildError, install_env
from podenv.envspec import EnvSpecError, load_env_spec
from podenv.errors import IntegrityError
from podenv.lock import LockError
from podenv.models import ModelBuildError, build_model_layer
from tests.reference import REFERENCE_LOCK


def write_spec(path: Path, **fields: object) -> Path:
    document = {"name": path.stem, "version": "1.0.0", "pixi_environment": "default", **fields}
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.contract
def test_unhashed_pypi_packages_are_refused_unless_allowed(tmp_path: Path) -> None:
    lock = tmp_path / "pixi.lock"
    text = REFERENCE_LOCK.read_text()
    # Drop the hash of one wheel, as a hand-edited or foreign lock might.
    absl_hash = "526a04eadab8b4ee719ce68f204172ead1027549089702d99b9059f129ff1308"
    marker = f"  name: absl-py\n  version: 2.1.0\n  sha256: {absl_hash}\n"
    assert marker in text
    lock.write_text(text.replace(marker, "  name: absl-py\n  version: 2.1.0\n"))
    prefix = tmp_path / "prefix"

    with pytest.raises(EnvBuildError, match=r"without a hash \(absl-py\).*allow_unhashed"):
        install_env(lock, "default", "linux-64", prefix, tmp_path / "cache")

    assert not prefix.exists()


@pytest.mark.contract
def test_a_lock_without_the_environment_says_to_run_pixi_lock(tmp_path: Path) -> None:
    with pytest.raises(LockError, match=r"run `pixi lock`"):
        install_env(REFERENCE_LOCK, "tts", "linux-64", tmp_path / "prefix", tmp_path / "cache")
    with pytest.raises(LockError, match=r"no packages for linux-aarch64.*pixi lock"):
        install_env(REFERENCE_LOCK, "default", "linux-aarch64", tmp_path / "prefix", tmp_path / "cache")
    assert not (tmp_path / "prefix").exists()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"version": "../x"}, "$.version"),
        (
            {"models": [{"name": "m", "source": "hf", "id": "a/b", "revision": "main", "target": "hf-hub"}]},
            "$.models[0].revision",
        ),
        (
            {"models": [{"name": "m", "source": "url", "id": "x", "revision": "1", "target": "torch-hub"}]},
            "$.models[0]",
        ),
        (
            {"models": [{"name": "m", "source": "ftp", "id": "x", "revision": "1", "target": "hf-hub"}]},
            "$.models[0].source",
        ),
        ({"unknown": True}, "$"),
    ],
)
def test_env_spec_errors_name_the_field(tmp_path: Path, fields: dict, named: str) -> None:
    path = write_spec(tmp_path / "tts.yaml", **fields)
    with pytest.raises(EnvSpecError) as caught:
        load_env_spec(path)
    assert f"is invalid at {named}" in str(caught.value) or f"is invalid at {named}:" in str(caught.value)


def test_env_spec_name_must_match_its_file(tmp_path: Path) -> None:
    path = tmp_path / "tts.yaml"
    path.write_text(yaml.safe_dump({"name": "asr", "version": "1", "pixi_environment": "asr"}))
    with pytest.raises(EnvSpecError, match="must match the file name 'tts'"):
        load_env_spec(path)


@pytest.fixture
def file_server(tmp_path: Path):
    """A real HTTP server on loopback serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _url_model(tmp_path: Path, url: str, sha256: str) -> Path:
    model = {
        "name": "align",
        "source": "url",
        "id": "torchaudio/wav2vec2",
        "revision": "1",
        "target": "torch-hub",
        "url": url,
        "sha256": sha256,
    }
    return write_spec(tmp_path / "asr.yaml", models=[model])


def test_url_model_lands_in_torch_hub_layout(tmp_path: Path, file_server) -> None:
    root, base = file_server
    (root / "weights.pth").write_bytes(b"w" * 5000)
    spec = load_env_spec(_url_model(tmp_path, f"{base}/weights.pth", hashlib.sha256(b"w" * 5000).hexdigest()))
    output = tmp_path / "out" / "align.tar.zst"

    info = build_model_layer(spec.models[0], tmp_path, output)

    with zstandard.open(output, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        names = [member.name for member in tar]
    assert names == ["hub", "hub/checkpoints", "hub/checkpoints/weights.pth"]
    assert info.unpacked_size == 5000


def test_url_model_with_the_wrong_hash_is_refused_and_leaves_nothing(tmp_path: Path, file_server) -> None:
    root, base = file_server
    (root / "weights.pth").write_bytes(b"tampered")
    spec = load_env_spec(_url_model(tmp_path, f"{base}/weights.pth", "0" * 64))
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    with pytest.raises(IntegrityError, match="not the pinned sha256:0000"):
        build_model_layer(spec.models[0], tmp_path, output_dir / "align.tar.zst")

    assert list(output_dir.iterdir()) == []


def test_unreachable_hub_names_what_could_not_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = {
        "name": "vocos",
        "source": "hf",
        "id": "charactr/vocos-mel-24khz",
        "revision": "0feb3fdd929bcd6649e0e7c5a688cf7dd012ef21",
        "target": "hf-hub",
    }
    spec = load_env_spec(write_spec(tmp_path / "tts.yaml", models=[model]))
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    with pytest.raises(ModelBuildError) as caught:
        build_model_layer(spec.models[0], tmp_path, output_dir / "vocos.tar.zst")

    message = str(caught.value)
    assert "could not download charactr/vocos-mel-24khz@0feb3fdd" in message
    assert f"127.0.0.1:{port}" in message
    assert list(output_dir.iterdir()) == []
