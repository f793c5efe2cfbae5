"""Names the build, the worker's volume and the handler agree on: where each layer goes and
what the files that carry those decisions are called. Defined once here for podenv; the
worker (which cannot import podenv, ADR 0006) mirrors what it needs in `worker/layout.py`,
and `tests/unit/test_contracts.py` keeps the two equal.
"""

# A layer's target: where its files go (the manifest schema's `target` enum).
ENV_TARGET = "env"  # the env prefix
HF_HUB_TARGET = "hf-hub"  # HF_HUB_CACHE, the Hugging Face hub cache layout
TORCH_HUB_TARGET = "torch-hub"  # TORCH_HOME, what torch.hub reads
CODE_TARGET = "code"  # the handler and its plugins: the worker's PYTHONPATH (ADR 0014)
TARGETS = (ENV_TARGET, HF_HUB_TARGET, TORCH_HUB_TARGET, CODE_TARGET)
MODEL_TARGETS = (HF_HUB_TARGET, TORCH_HUB_TARGET)

# The variable a model target's cache is named by, in the worker's environment.
CACHE_VARIABLES = {HF_HUB_TARGET: "HF_HUB_CACHE", TORCH_HUB_TARGET: "TORCH_HOME"}

# A release directory on the volume: its manifest and one view per target.
RELEASE_FILE = "release.json"
VIEW_DIRS = {ENV_TARGET: "env", HF_HUB_TARGET: "hf-hub", TORCH_HUB_TARGET: "torch", CODE_TARGET: "code"}

# Inside an env layer: the files that hold the build prefix, for the worker to relocate.
RELOCATIONS_FILE = "conda-meta/podenv-relocations.json"


def hub_folder(repo_id: str, repo_type: str = "model") -> str:
    """The hub cache's folder name for a repository, e.g. models--SWivid--F5-TTS."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")
