"""Model layers: each pinned model becomes one layer in the cache layout its loader reads.

- ``hf-hub``: the Hugging Face hub cache (``models--org--name/snapshots/<rev>/...`` with
  ``refs/``), what ``HF_HUB_CACHE`` points at; loaders find it with ``HF_HUB_OFFLINE=1``.
- ``torch-hub``: ``TORCH_HOME`` (``hub/checkpoints/<file>``), what ``torch.hub`` reads.

Sources: ``hf`` (``huggingface_hub.snapshot_download`` at a pinned commit), ``url`` (a file
with its sha256) and ``local`` (a directory, for offline work and tests).
"""

import hashlib
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from podenv.archive import ArchiveInfo, pack_tree
from podenv.envspec import ModelSpec
from podenv.errors import IntegrityError, PodenvError
from podenv.layout import TORCH_HUB_TARGET, hub_folder
from podenv.progress import Progress

_DOWNLOAD_CHUNK = 1 << 20


class ModelBuildError(PodenvError):
    """A model could not be fetched or laid out."""


def _lay_out_local(spec: ModelSpec, workdir: Path, staging: Path) -> None:
    source = (workdir / spec.document["path"]).resolve()
    if not source.is_dir():
        raise ModelBuildError(f"model {spec.name}: local path {source} is not a directory.")
    if spec.target == TORCH_HUB_TARGET:
        shutil.copytree(source, staging / "hub" / "checkpoints", symlinks=True)
        return
    repo = staging / hub_folder(spec.id, spec.document.get("repo_type", "model"))
    shutil.copytree(source, repo / "snapshots" / spec.revision, symlinks=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(spec.revision)


def _lay_out_hf(spec: ModelSpec, staging: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            spec.id,
            revision=spec.revision,
            repo_type=spec.document.get("repo_type", "model"),
            allow_patterns=spec.document.get("allow_patterns"),
            cache_dir=staging,
        )
    except Exception as error:  # huggingface_hub raises many types; the user needs the gist
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        from huggingface_hub import constants

        raise ModelBuildError(
            f"model {spec.name}: could not download {spec.id}@{spec.revision} from the Hugging Face hub "
            f"at {constants.ENDPOINT} ({type(error).__name__}: {reason})."
        ) from None
    # The hub library keeps lock files and a download scratch area in the cache: not model content.
    shutil.rmtree(staging / ".locks", ignore_errors=True)


def _download(url: str, destination: Path, expected_sha256: str, label: str) -> None:
    hasher = hashlib.sha256()
    progress = Progress(f"download {label}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as sink:
            progress.total = int(response.headers.get("Content-Length") or 0) or None
            while chunk := response.read(_DOWNLOAD_CHUNK):
                hasher.update(chunk)
                sink.write(chunk)
                progress.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        raise ModelBuildError(f"model {label}: could not download {url} ({error}).") from None
    if hasher.hexdigest() != expected_sha256:
        destination.unlink()
        raise IntegrityError(
            f"model {label}: {url} hashes to sha256:{hasher.hexdigest()}, "
            f"not the pinned sha256:{expected_sha256}."
        )


def _lay_out_url(spec: ModelSpec, staging: Path) -> None:
    destination = staging / spec.torch_filename
    destination.parent.mkdir(parents=True, exist_ok=True)
    _download(spec.document["url"], destination, spec.document["sha256"], spec.name)


def build_model_layer(spec: ModelSpec, workdir: Path, output: Path) -> ArchiveInfo:
    """Fetch ``spec`` into its cache layout in a private staging dir and pack it at ``output``."""
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex}.staging"
    staging.mkdir(parents=True)
    try:
        if spec.source == "local":
            _lay_out_local(spec, workdir, staging)
        elif spec.source == "hf":
            _lay_out_hf(spec, staging)
        else:
            _lay_out_url(spec, staging)
        return pack_tree(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
