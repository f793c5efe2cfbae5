"""Cold and warm boot against SeaweedFS: `podenv boot` against the naive sequence.

In one run, on the same env layer (the pack_env benchmark's prefix: the demo CPython plus
PyTorch 2.13.0 CPU, about 15,000 files and 780 MB unpacked), published to a private
SeaweedFS on loopback:

* cold, ours: ``podenv boot --version 1 --root <fresh dir>`` (parallel ranged GETs, sha256,
  zstd and extraction in one pass, in-process relocation, atomic rename);
* cold, naive: boto3 ``download_file`` of the whole blob, then ``sha256`` of the file, then
  ``zstd -d | tar -x``, then the env's ``bin/conda-unpack``;
* warm: ``podenv boot ... --exec -- true`` on an installed release, process start to exec,
  median of 20.

Run from the repository root with the venv active::

    python bench/boot.py [--repeat 3] [--json results.json]

Goals (issue 4): cold ratio at most 0.6; warm median under 0.3 s.
"""

import argparse
import hashlib
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
from podenv.channels import promote
from podenv.envbuild import pack_env
from podenv.manifest import Manifest
from podenv.release import layer_document
from podenv.store import open_store


def publish_layer(store_url: str, layer_path: Path) -> tuple[dict, Manifest]:
    from podenv.archive import ArchiveInfo
    from podenv.digests import digest_file

    store = open_store(store_url)
    upload = store.put_blob(layer_path)
    info = ArchiveInfo(digest_file(layer_path), upload.size, 0, 0)
    layer = layer_document(info, "env", "env", "env")
    document = {
        "schema_version": 1, "name": "bench", "version": "1", "created": "2026-11-22T00:00:00Z",
        "builder": {"podenv": "bench", "host": "bench", "git_commit": None},
        "inputs": {"lock_digest": info.digest, "env_spec_digest": info.digest, "pixi_environment": "bench"},
        "platform": "linux-64", "cuda": None, "layers": [layer], "sbom": {"conda": [], "pypi": []},
    }  # fmt: skip
    manifest = Manifest.from_document(document)
    store.put_release("bench", "1", manifest.canonical_bytes())
    promote(store, "bench", "1", "stable")
    return layer, manifest


def podenv(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "podenv.cli", *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True)


def boot_arguments(store_url: str, root: Path) -> list[str]:
    return ["boot", "--store", store_url, "--env", "bench", "--version", "1", "--root", str(root)]


def cold_ours(store_url: str, root: Path, writers: int) -> float:
    started = time.perf_counter()
    podenv(*boot_arguments(store_url, root), "--writers", str(writers))
    return time.perf_counter() - started


def cold_naive(server: SeaweedServer, key: str, digest: str, target: Path) -> float:
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    blob = target.with_suffix(".tar.zst")
    started = time.perf_counter()
    client.download_file(server.bucket, key, str(blob))
    hasher = hashlib.sha256()
    with open(blob, "rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    assert f"sha256:{hasher.hexdigest()}" == digest
    target.mkdir()
    subprocess.run(f"zstd -d -c {blob} | tar -x -C {target}", shell=True, check=True)
    subprocess.run([str(target / "bin" / "python"), str(target / "bin" / "conda-unpack")], check=True)
    elapsed = time.perf_counter() - started
    blob.unlink()
    return elapsed


def warm_times(store_url: str, root: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        podenv(*boot_arguments(store_url, root), "--exec", "--", "true")
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--writers", type=int, default=16, help="podenv boot --writers (default 16)")
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    prefix = build_prefix(WORK, prepare_tree(None))
    layer_path = WORK / "env-layer.tar.zst"
    if not layer_path.exists():
        pack_env(prefix, layer_path)
    scratch = Path(tempfile.mkdtemp(prefix="podenv-bench-boot-", dir=WORK))
    server = SeaweedServer(scratch / "seaweed").start()
    os.environ.update(server.environment)
    store_url = f"s3://{server.bucket}/bench"
    try:
        layer, _ = publish_layer(store_url, layer_path)
        key = f"bench/blobs/sha256/{layer['digest'].removeprefix('sha256:')}"
        print(f"layer: {layer_path.stat().st_size / 1e6:.1f} MB compressed; {layer['digest']}")
        ours, naive = [], []
        for round_number in range(arguments.repeat):
            root, target = scratch / f"root-{round_number}", scratch / f"naive-{round_number}"
            naive.append(cold_naive(server, key, layer["digest"], target))
            ours.append(cold_ours(store_url, root, arguments.writers))
            print(f"round {round_number + 1}: podenv boot {ours[-1]:.2f}s, naive {naive[-1]:.2f}s")
            shutil.rmtree(target)
            if round_number < arguments.repeat - 1:
                shutil.rmtree(root)
        warm = warm_times(store_url, root, 20)
    finally:
        server.stop()
    result = {
        "cold_podenv_s": statistics.median(ours),
        "cold_naive_s": statistics.median(naive),
        "warm_median_s": statistics.median(warm),
        "warm_max_s": max(warm),
    }
    result["cold_ratio"] = result["cold_podenv_s"] / result["cold_naive_s"]
    print(
        f"cold: podenv {result['cold_podenv_s']:.2f}s vs naive {result['cold_naive_s']:.2f}s, "
        f"ratio {result['cold_ratio']:.2f}; warm boot median {result['warm_median_s'] * 1000:.0f} ms "
        f"(max {result['warm_max_s'] * 1000:.0f} ms)"
    )
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
