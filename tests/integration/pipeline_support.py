"""Running the Snakemake pipeline from tests, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def snakemake(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPOSITORY / "Snakefile"), "-c2"]
    command += ["--directory", str(project), *arguments]
    # Inside the build environment, whose `python` the rules call.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": path}
    )
