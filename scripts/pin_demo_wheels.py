"""Pin the PyPI wheels of the demo worker env (the runpod SDK and what it needs) with their hashes.

    python3 scripts/pin_demo_wheels.py     # rewrites devkit/data/demo-worker-wheels.json

Resolves with uv for the demo env's interpreter (CPython 3.11, linux x86_64, glibc 2.28+) and
keeps one wheel per package: the URL and sha256 pixi would write into pixi.lock.
"""

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

REQUIREMENTS = ["runpod==1.10.0"]
OUTPUT = Path(__file__).resolve().parents[1] / "podenv" / "data" / "demo-worker-wheels.json"
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]


def _supported_tags() -> list[Tag]:
    tags = list(cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=PLATFORMS))
    return tags + list(compatible_tags((3, 11), "cp311", PLATFORMS))


def _best_wheel(package: dict, ranking: dict[Tag, int]) -> dict:
    def rank(wheel: dict) -> int:
        _, _, _, tags = parse_wheel_filename(wheel["url"].rsplit("/", 1)[1])
        return min((ranking[tag] for tag in tags if tag in ranking), default=len(ranking))

    best = min(package.get("wheels", []), key=rank, default=None)
    if best is None or rank(best) == len(ranking):
        sys.exit(f"{package['name']} {package['version']} has no wheel for CPython 3.11 on linux x86_64.")
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        requirements = Path(work) / "requirements.in"
        requirements.write_text("\n".join(REQUIREMENTS) + "\n")
        lock = Path(work) / "pylock.toml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "uv",
                "pip",
                "compile",
                str(requirements),
                "--format",
                "pylock.toml",
                "--python-platform",
                "x86_64-manylinux_2_28",
                "--python-version",
                "3.11",
                "-q",
                "-o",
                str(lock),
            ],
            check=True,
        )
        packages = tomllib.loads(lock.read_text())["packages"]
    ranking = {tag: index for index, tag in enumerate(_supported_tags())}
    wheels = []
    for package in packages:
        wheel = _best_wheel(package, ranking)
        wheels.append(
            {
                "name": package["name"],
                "version": package["version"],
                "url": wheel["url"],
                "sha256": wheel["hashes"]["sha256"],
            }
        )
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps({"requirements": REQUIREMENTS, "wheels": wheels}, indent=1) + "\n")
    print(f"{len(wheels)} wheels pinned in {OUTPUT}")


if __name__ == "__main__":
    main()
