"""A layer's directories on the simulated network volume: one writer against 16 (one run, a ratio).

    uv run --frozen python bench/volume_directories.py [--directories 2000] [--latency-ms 1]

Needs root and /dev/fuse (devkit/netvolume.py). The index is shaped like an env's: a few
deep trees of packages with a handful of subdirectories each.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from devkit.netvolume import NetworkVolume
from podenv.blobpool import make_directories
from podenv.shards import ShardIndex


def env_like_index(count: int) -> ShardIndex:
    names: set[str] = {"lib", "lib/python3.11", "lib/python3.11/site-packages"}
    package = 0
    while len(names) < count:
        base = f"lib/python3.11/site-packages/pkg{package:04d}"
        names |= {base, *(f"{base}/sub{j}" for j in range(4)), *(f"{base}/sub0/deep{j}" for j in range(2))}
        package += 1
    return ShardIndex(tuple(sorted(names)), (), ())


def timed(target: Path, index: ShardIndex, writers: int) -> float:
    started = time.monotonic()
    make_directories(target, index, writers=writers)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directories", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=1.0)
    arguments = parser.parse_args()
    index = env_like_index(arguments.directories)
    with tempfile.TemporaryDirectory(prefix="podenv-bench-dirs-") as work:
        source, mountpoint = Path(work) / "source", Path(work) / "mnt"
        source.mkdir()
        volume = NetworkVolume(source, mountpoint, latency=arguments.latency_ms / 1000)
        with volume:
            print(f"simulated volume: {volume.description}; {len(index.directories)} directories")
            figures = {}
            for writers in (1, 16):
                figures[writers] = timed(mountpoint / f"w{writers}", index, writers)
                shutil.rmtree(mountpoint / f"w{writers}")
                print(f"  {writers:>2} writer(s): {figures[writers]:6.2f} s")
            print(f"  16 writers / 1 writer: {figures[16] / figures[1]:.2f}")


if __name__ == "__main__":
    main()
