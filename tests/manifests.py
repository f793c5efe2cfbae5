"""A valid release manifest to start tests from."""

import copy
from typing import Any

_EXAMPLE: dict[str, Any] = {
    "schema_version": 1,
    "name": "tts",
    "version": "1.0.0",
    "created": "2026-11-22T12:00:00Z",
    "builder": {"podenv": "0.1.0", "host": "build-box", "git_commit": "0123abc"},
    "inputs": {
        "lock_digest": "sha256:" + "1" * 64,
        "env_spec_digest": "sha256:" + "2" * 64,
        "pixi_environment": "tts",
    },
    "platform": "linux-64",
    "cuda": "12.4",
    "layers": [
        {
            "kind": "env",
            "name": "env",
            "media_type": "application/vnd.podenv.layer.v1.tar+zstd",
            "digest": "sha256:" + "3" * 64,
            "size": 1000,
            "unpacked_size": 5000,
            "files": 12,
            "target": "env",
            "build_prefix": "/build/tts/prefix",
        },
        {
            "kind": "model",
            "name": "f5-tts",
            "media_type": "application/vnd.podenv.layer.v1.tar+zstd",
            "digest": "sha256:" + "4" * 64,
            "size": 300,
            "unpacked_size": 400,
            "files": 3,
            "target": "hf-hub",
            "model": {
                "id": "SWivid/F5-TTS",
                "source": "hf",
                "revision": "84e5a410d9cead4de2f847e7c9369a6440bdfaca",
            },
        },
    ],
    "sbom": {
        "conda": [{"name": "python", "version": "3.11.9", "build": "h_0", "sha256": "5" * 64}],
        "pypi": [{"name": "runpod", "version": "1.7.0", "sha256": None}],
    },
}


def example_manifest() -> dict[str, Any]:
    return copy.deepcopy(_EXAMPLE)
