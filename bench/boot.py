"""Cold and warm boot against SeaweedFS: `podenv boot` of a package-sharded env against the naive
sequence, with 1 and N processes, and the old one-blob format for reference.

In one run, on the same env (the pack_env benchmark's prefix: the demo CPython plus PyTorch
2.13.0 CPU, about 15,000 files and 780 MB unpacked), published to a private SeaweedFS on
loopback in both formats:

* cold, ours: ``podenv boot --version 1 --root <fresh dir> --jobs N``: the sharded layer, every
  shard fetched (ranged GETs), hashed, decompressed and extracted by a pool of N processes;
  N = 1 and N = the CPUs;
* cold, old format: the same env as one tar.zst (the schema-1 layout), one stream;
* cold, naive: the shell sequence ``curl`` (a presigned URL of the one blob), ``sha256sum -c``,
  ``zstd -d | tar -x``, the env's ``bin/conda-unpack``, timed from the shell's start as ours is
  from the process's;
* warm: ``podenv boot ... --exec -- true`` on an installed release, process start to exec,
  median of 20.

The page cache is dropped before each cold round where the machine allows it (root).

Run from the repository root with the venv active::

    python bench/boot.py [--repeat 3] [--json results.json]

Goals (issue 12): cold ratio (ours, all CPUs / naive) at most 0.6; warm median under 0.3 s.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_throughput import prepare_tree
from pack_env import WORK, build_prefix

from devkit.seaweed import SeaweedServer
from podenv.archive import ArchiveInfo, write_archive
from podenv.channels import promote
from podenv.digests import digest_file
from podenv.envbuild import env_entries, pack_env
from podenv.manifest import Manifest
from podenv.release import layer_document, sharded_layer_document
from podenv.shards import INDEX_FILE, layer_blobs, parse_index
from podenv.store import open_store


def manifest_for(name: str, layer: dict, schema_version: int) -> Manifest:
    document = {
        "schema_version": schema_version, "name": name, "version": "1", "created": "2026-11-22T00:00:00Z",
        "builder": {"podenv": "bench", "host": "bench", "git_commit": None},
        "inputs": {"lock_digest": layer["digest"], "env_spec_digest": layer["digest"],
                   "pixi_environment": "bench"},
        "platform": "linux-64", "cuda": None, "layers": [layer], "sbom": {"conda": [], "pypi": []},
    }  # fmt: skip
    return Manifest.from_document(document)


def publish(store_url: str, name: str, manifest: Manifest, blobs: dict[str, Path]) -> None:
    store = open_store(store_url)
    for digest, path in blobs.items():
        store.put_blob(path, digest)
    store.put_release(name, "1", manifest.canonical_bytes())
    promote(store, name, "1", "stable")


def build_layers(prefix: Path, scratch: Path) -> tuple[dict, dict[str, Path], dict, Path]:
    """The env as a sharded layer (packed by this podenv, each run: a few seconds) and as one
    tar.zst (the old format, which does not change: built once into the bench cache)."""
    shards = scratch / "env-shards"
    pack_env(prefix, shards)
    index_bytes = (shards / INDEX_FILE).read_bytes()
    index = parse_index(index_bytes, digest_file(shards / INDEX_FILE))
    blob = WORK / "env-layer.tar.zst"
    if not blob.exists():
        write_archive(env_entries(prefix).values(), blob)
    info = ArchiveInfo(digest_file(blob), blob.stat().st_size, index.unpacked_size, index.files)
    sharded = sharded_layer_document(index, "env", "env", "env")
    return sharded, layer_blobs(shards, index), layer_document(info, "env", "env", "env"), blob


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def podenv(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "podenv.cli", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:  # the bench stops, saying why podenv did
        raise SystemExit(f"podenv {arguments[0]} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result


def boot_arguments(store_url: str, name: str, root: Path) -> list[str]:
    return ["boot", "--store", store_url, "--env", name, "--version", "1", "--root", str(root)]


def cold_ours(store_url: str, name: str, root: Path, jobs: int) -> float:
    started = time.perf_counter()
    podenv(*boot_arguments(store_url, name, root), "--jobs", str(jobs))
    return time.perf_counter() - started


NAIVE_SEQUENCE = (
    'set -e; now() { date +%s.%N; }; t0=$(now); curl -sSf -o "$BLOB" "$URL"; t1=$(now); '
    'echo "$HEX  $BLOB" | sha256sum -c --quiet; t2=$(now); mkdir "$TREE"; '
    'zstd -d -q -c "$BLOB" | tar -x -C "$TREE"; t3=$(now); "$TREE/bin/python" "$TREE/bin/conda-unpack"; '
    't4=$(now); echo "curl $t0 $t1 sha256sum $t1 $t2 zstd|tar $t2 $t3 conda-unpack $t3 $t4" > "$STEPS"'
)


def naive_steps(path: Path) -> str:
    """'curl 1.2s, sha256sum 0.3s, ...' from the times the sequence wrote."""
    words = path.read_text().split()
    return ", ".join(
        f"{words[i]} {float(words[i + 2]) - float(words[i + 1]):.1f}s" for i in range(0, len(words), 3)
    )


def cold_naive(server: SeaweedServer, key: str, digest: str, target: Path) -> float:
    """The naive sequence as a shell runs it: curl (a presigned URL, made before the clock
    starts), sha256sum, zstd -d | tar -x, conda-unpack; timed from the shell's start."""
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    url = client.generate_presigned_url("get_object", Params={"Bucket": server.bucket, "Key": key})
    blob = target.with_suffix(".tar.zst")
    target.parent.mkdir(parents=True, exist_ok=True)
    steps = target.with_suffix(".steps")
    variables = {"BLOB": str(blob), "URL": url, "HEX": digest.removeprefix("sha256:"), "TREE": str(target)}
    variables["STEPS"] = str(steps)
    started = time.perf_counter()
    subprocess.run(["sh", "-c", NAIVE_SEQUENCE], check=True, env={**os.environ, **variables})
    elapsed = time.perf_counter() - started
    print(f"  naive: {naive_steps(steps)}", flush=True)
    blob.unlink()
    return elapsed


def warm_times(store_url: str, root: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        podenv(*boot_arguments(store_url, "bench", root), "--exec", "--", "true")
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    prefix = build_prefix(WORK, prepare_tree(None))
    scratch = Path(tempfile.mkdtemp(prefix="podenv-bench-boot-", dir=WORK))
    sharded, shard_blobs, single, blob = build_layers(prefix, scratch)
    server = SeaweedServer(scratch / "seaweed").start()
    os.environ.update(server.environment)
    store_url = f"s3://{server.bucket}/bench"
    dropped = drop_caches()
    try:
        publish(store_url, "bench", manifest_for("bench", sharded, 2), shard_blobs)
        publish(store_url, "old", manifest_for("old", single, 1), {single["digest"]: blob})
        key = f"bench/blobs/sha256/{single['digest'].removeprefix('sha256:')}"
        print(
            f"env: {sharded['files']} files, {sharded['unpacked_size'] / 1e6:.0f} MB; sharded: "
            f"{len(shard_blobs) - 1} shards, {sharded['size'] / 1e6:.1f} MB; "
            f"one blob: {single['size'] / 1e6:.1f} MB; "
            f"cpus: {cpus}; page cache dropped before each round: {'yes' if dropped else 'no (not root)'}"
        )
        runs: dict[str, list[float]] = {"naive": [], "jobs1": [], f"jobs{cpus}": [], "old": []}
        for number in range(arguments.repeat):
            round_dir = scratch / f"round-{number}"
            drop_caches()
            runs["naive"].append(cold_naive(server, key, single["digest"], round_dir / "naive"))
            drop_caches()
            runs["jobs1"].append(cold_ours(store_url, "bench", round_dir / "jobs1", 1))
            drop_caches()
            runs[f"jobs{cpus}"].append(cold_ours(store_url, "bench", round_dir / f"jobs{cpus}", cpus))
            drop_caches()
            runs["old"].append(cold_ours(store_url, "old", round_dir / "old", cpus))
            print(
                f"round {number + 1}: "
                + ", ".join(f"{name} {times[-1]:.2f}s" for name, times in runs.items())
            )
            if number < arguments.repeat - 1:
                shutil.rmtree(round_dir)
        warm = warm_times(store_url, round_dir / f"jobs{cpus}", 20)
    finally:
        server.stop()
    result = {name: statistics.median(times) for name, times in runs.items()}
    result["cpus"] = cpus
    result["ratio"] = result[f"jobs{cpus}"] / result["naive"]
    result["ratio_jobs1"] = result["jobs1"] / result["naive"]
    result["ratio_old_format"] = result["old"] / result["naive"]
    result["scaling_1_to_n"] = result["jobs1"] / result[f"jobs{cpus}"]
    result["warm_median_s"] = statistics.median(warm)
    print(
        f"cold: podenv (sharded, {cpus} processes) {result[f'jobs{cpus}']:.2f}s, "
        f"1 process {result['jobs1']:.2f}s, "
        f"old format {result['old']:.2f}s, naive {result['naive']:.2f}s; ratio {result['ratio']:.2f} "
        f"(1 process {result['ratio_jobs1']:.2f}, old format {result['ratio_old_format']:.2f}); "
        f"1 -> {cpus} processes: {result['scaling_1_to_n']:.2f}x; "
        f"warm boot median {result['warm_median_s'] * 1000:.0f} ms"
    )
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
