"""The worker's copy of the names it shares with podenv (it cannot import podenv, ADR 0006).

Mirrors of `podenv/layout.py` and `podenv/log.py`'s JSON keys; `tests/unit/test_contracts.py`
keeps each equal to podenv's own.
"""

HF_HUB_TARGET = "hf-hub"
TORCH_HUB_TARGET = "torch-hub"
CACHE_VARIABLES = {HF_HUB_TARGET: "HF_HUB_CACHE", TORCH_HUB_TARGET: "TORCH_HOME"}

# The keys every JSON log line starts with, on podenv's and the worker's stream alike.
LOG_KEYS = ("ts", "level", "logger", "msg")


def hub_folder(repo_id: str, repo_type: str = "model") -> str:
    """The hub cache's folder name for a repository, e.g. models--SWivid--F5-TTS."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")
