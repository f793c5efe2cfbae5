"""Packing a large environment: conda-pack's own tar.zst against podenv's layer writer.

Both sides pack the same prefix, with the same file selection (conda-pack's), in one run:

* baseline: ``conda_pack.CondaEnv.from_prefix(prefix).pack(output=..., format="tar.zst")``
  with conda-pack's defaults;
* ours: ``podenv.envbuild.pack_env(prefix, output)`` (conda-pack's selection, our
  deterministic, multi-threaded zstd writer).

The prefix is the demo channel's relocatable CPython, installed by py-rattler, plus
PyTorch 2.13.0 CPU (about 14,600 files, 760 MB) in its site-packages, as a worker env with a
large PyPI payload looks. Run from the repository root with the venv active::

    python bench/pack_env.py [--repeat 3] [--json results.json]

Goal (issue 3): at least 5x faster at no more than 1.25x the size.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_throughput import prepare_tree

from podenv.envbuild import pack_env

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / ".cache" / "pack-env"


def build_prefix(work: Path, tree: Path) -> Path:
    from rattler import install

    from devkit.demoproject import build_channel_dir
    from devkit.localchannel import locked_records

    prefix = work / "prefix"
    if (prefix / "conda-meta").is_dir():
        return prefix
    channel = work / "channel"
    build_channel_dir(channel)
    records = locked_records(channel, ["python", "greeting"])
    asyncio.run(install(records, target_prefix=prefix, cache_dir=work / "pkgs", show_progress=False))
    shutil.copytree(tree, prefix / "local/lib/python3.11/dist-packages", symlinks=True, dirs_exist_ok=True)
    return prefix


def count(prefix: Path) -> tuple[int, int]:
    files = [p for p in prefix.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def conda_pack_default(prefix: Path, output: Path) -> None:
    import conda_pack

    conda_pack.CondaEnv.from_prefix(str(prefix)).pack(output=str(output), format="tar.zst", force=True)


def ours(prefix: Path, output: Path) -> None:
    pack_env(prefix, output)


def size_of(output: Path) -> int:
    """A tar.zst's size, or a sharded layer's: every shard and its index."""
    if output.is_dir():
        return sum(path.stat().st_size for path in output.iterdir())
    return output.stat().st_size


def timed(function, prefix: Path, output: Path) -> float:
    if output.is_dir():
        shutil.rmtree(output)
    output.unlink(missing_ok=True)
    started = time.perf_counter()
    function(prefix, output)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    prefix = build_prefix(WORK, prepare_tree(None))
    files, size = count(prefix)
    cpus = len(os.sched_getaffinity(0))
    print(f"prefix: {prefix}: {files} files, {size / 1e6:.1f} MB; cpus: {cpus}")
    baseline_out, ours_out = WORK / "conda-pack.tar.zst", WORK / "podenv-shards"
    times: dict[str, list[float]] = {"conda-pack": [], "podenv": []}
    for round_number in range(arguments.repeat):
        times["podenv"].append(timed(ours, prefix, ours_out))
        times["conda-pack"].append(timed(conda_pack_default, prefix, baseline_out))
        podenv_seconds, conda_pack_seconds = times["podenv"][-1], times["conda-pack"][-1]
        print(f"round {round_number + 1}: podenv {podenv_seconds:.1f}s, conda-pack {conda_pack_seconds:.1f}s")
    result = {
        "files": files,
        "bytes": size,
        "podenv_seconds": statistics.median(times["podenv"]),
        "conda_pack_seconds": statistics.median(times["conda-pack"]),
        "podenv_size": size_of(ours_out),
        "conda_pack_size": size_of(baseline_out),
    }
    result["speedup"] = result["conda_pack_seconds"] / result["podenv_seconds"]
    result["size_ratio"] = result["podenv_size"] / result["conda_pack_size"]
    print(
        f"podenv {result['podenv_seconds']:.1f}s vs conda-pack {result['conda_pack_seconds']:.1f}s: "
        f"{result['speedup']:.1f}x faster; size {result['podenv_size'] / 1e6:.1f} MB vs "
        f"{result['conda_pack_size'] / 1e6:.1f} MB: ratio {result['size_ratio']:.2f}"
    )
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
