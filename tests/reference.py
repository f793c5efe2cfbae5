"""Files pixi itself wrote, kept in the workspace's shared/reference beside the checkout."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPOSITORY.parent / "shared" / "reference"
REFERENCE_LOCK = REFERENCE_DIR / "pixi-example" / "pixi.lock"
PIXI_MANIFEST_SCHEMA = REFERENCE_DIR / "pixi-manifest.schema.json"
