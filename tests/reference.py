"""Files pixi itself wrote, kept in the workspace's shared/reference beside the checkout."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPOSITORY.parent / "shared" / "reference"
REFERENCE_LOCK = REFERENCE_DIR / "pixi-example" / "pixi.lock"
PIXI_MANIFEST_SCHEMA = REFERENCE_DIR / "pixi-manifest.schema.json"
RUNPOD_OPENAPI = REFERENCE_DIR / "runpod-rest-v2.openapi.json"


def require_reference(path: Path) -> Path:
    """A contract test's published document, or a failure that says what is missing and where."""
    import pytest

    if not path.is_file():
        pytest.fail(
            f"contract test: {path.name} is missing at {path} (the workspace's shared/reference beside "
            "the checkout, never copied into the repository); run the contract tests where it exists"
        )
    return path
