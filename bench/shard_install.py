"""The installer's alternatives, measured in one run: processes against threads, and shard sizes.

The env is the pack_env benchmark's prefix (the demo CPython plus PyTorch 2.13.0 CPU, about
15,000 files and 780 MB unpacked), packed as package-sharded layers with three shard limits
(16, 64 and 256 MiB). Each install reads every shard from a local blob cache (no network: this
isolates what the pool parallelises, sha256 + zstd + tar parsing + file writes) into a fresh
directory, the page cache dropped first where the machine allows it:

* processes: `podenv.blobpool.run_jobs` with 1 and with N processes (N = the CPUs);
* threads: the same blob tasks on a thread pool of N threads in one process.

Run from the repository root with the venv active::

    python bench/shard_install.py [--repeat 2] [--json results.json]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_throughput import prepare_tree
from boot import drop_caches
from pack_env import WORK, build_prefix

from podenv.blobpool import (
    LayerJob,
    SharedCache,
    blob_tasks,
    make_directories,
    make_links,
    run_blob_task,
    run_jobs,
)
from podenv.digests import digest_file, digest_hex
from podenv.envbuild import env_entries
from podenv.fileio import file_writers
from podenv.manifest import Layer
from podenv.release import sharded_layer_document
from podenv.shards import INDEX_FILE, ShardIndex, package_owners, parse_index, write_sharded_layer

LIMITS_MIB = (16, 64, 256)


def sharded(prefix: Path, limit_mib: int) -> tuple[Path, ShardIndex]:
    """The env packed with this shard limit, laid out as a blob cache (blobs named by digest)."""
    output = WORK / f"shards-{limit_mib}mib"
    if not (output / INDEX_FILE).exists():
        entries = env_entries(prefix).values()
        write_sharded_layer(entries, package_owners(prefix), output, limit=limit_mib << 20)
    digest = digest_file(output / INDEX_FILE)
    index_blob = output / digest_hex(digest)
    if not index_blob.exists():
        os.link(output / INDEX_FILE, index_blob)
    return output, parse_index(index_blob.read_bytes(), digest)


def install(cache: Path, index: ShardIndex, target_root: Path, mode: str, workers: int) -> float:
    layer = Layer.from_document(sharded_layer_document(index, "model", "env", "env"))
    job = LayerJob(layer, Path(tempfile.mkdtemp(dir=target_root)), index=index)
    drop_caches()
    started = time.perf_counter()
    writers = file_writers(job.staging, None)  # as a boot chooses them
    make_directories(job.target, index, writers)
    shared = SharedCache(str(cache), str(target_root), 60.0, 0.0)  # every shard is cached: no lease taken
    tasks = blob_tasks(job, "file:///nonexistent-store", shared, False, writers)
    if mode == "processes":
        run_jobs([job], tasks, workers, lambda finished: make_links(finished.target, index, "env"))
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run_blob_task, sorted(tasks, key=lambda task: -task.size)))
        make_links(job.target, index, "env")
    elapsed = time.perf_counter() - started
    shutil.rmtree(job.staging)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    prefix = build_prefix(WORK, prepare_tree(None))
    target_root = Path(tempfile.mkdtemp(prefix="podenv-bench-install-", dir=WORK))
    results = {}
    try:
        for limit in LIMITS_MIB:
            cache, index = sharded(prefix, limit)
            biggest = max(shard.size for shard in index.shards)
            print(
                f"limit {limit} MiB: {len(index.shards)} shards, largest {biggest / 1e6:.1f} MB compressed, "
                f"{index.size / 1e6:.1f} MB in all"
            )
            for mode, workers in (("processes", 1), ("processes", cpus), ("threads", cpus)):
                times = [install(cache, index, target_root, mode, workers) for _ in range(arguments.repeat)]
                key = f"{limit}mib-{mode}-{workers}"
                results[key] = statistics.median(times)
                print(f"  {mode} x{workers}: {results[key]:.2f}s")
    finally:
        shutil.rmtree(target_root, ignore_errors=True)
    if arguments.json:
        arguments.json.write_text(json.dumps({"cpus": cpus, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
