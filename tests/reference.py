"""The published specs the contract tests check against: files pixi and RunPod published,
kept in the workspace's shared/reference beside the checkout and never copied into the
repository. Tests that need them are marked ``contract``: where the folder is absent (a
plain clone) they are reported as not run, with the reason; where ``CI`` is set, its absence
is a failure, so CI always runs them."""

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPOSITORY.parent / "shared" / "reference"
REFERENCE_LOCK = REFERENCE_DIR / "pixi-example" / "pixi.lock"
PIXI_MANIFEST_SCHEMA = REFERENCE_DIR / "pixi-manifest.schema.json"
RUNPOD_OPENAPI = REFERENCE_DIR / "runpod-rest-v2.openapi.json"
NOT_RUN_REASON = (
    f"contract test not run: the published specs are absent at {REFERENCE_DIR} "
    "(shared/reference beside the checkout); CI runs it"
)


def reference_present() -> bool:
    return REFERENCE_DIR.is_dir()


def contracts_required() -> bool:
    """CI must run every contract test: there, a missing folder fails instead."""
    return bool(os.environ.get("CI"))


def require_reference(path: Path) -> Path:
    """A contract test's published document, or a failure that says what is missing and where."""
    import pytest

    if not path.is_file():
        pytest.fail(
            f"contract test: {path.name} is missing at {path} (the workspace's shared/reference beside "
            "the checkout, never copied into the repository); run the contract tests where it exists"
        )
    return path
