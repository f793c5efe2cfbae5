"""Where the env goes: time to a ready worker on a simulated network volume, placement=volume
against placement=local, beside the local-disk floor; and cold installs with both placements.

In one run, against a private SeaweedFS and a simulated network volume (devkit/netvolume.py:
a FUSE passthrough adding ``--latency-ms`` to every metadata request and pacing data
through a ``--mbps`` link), calibrated first against runpod-python PR #538's figures:

* the release: the pack_env benchmark's env layer (the demo CPython plus PyTorch 2.13.0 CPU,
  about 15,000 files, 780 MB unpacked: the largest env this machine can build offline; the
  real torch + f5-tts + whisperx env is 60,000 files, 8.9 GB) and a model layer holding a
  real-size F5-TTS checkpoint (F5TTS_v1_Base/model_1250000.safetensors, 1.35 GB of random
  float32 in a valid safetensors file) in the hub cache layout;
* ready worker, for a new worker on a volume that already holds the release (page cache
  dropped before each): ``podenv boot --exec -- python -c "import torch; load the weights"``
  with placement=volume (env on the volume) and placement=local (env installed onto a fresh
  local root from the volume's blob cache), and the floor: the env already on local disk;
* cold install of the release on an empty volume: placement=volume with 1, 16 and 64
  writers, and placement=local.

Run from the repository root as root (FUSE, drop_caches)::

    python bench/placement.py [--latency-ms 1] [--mbps 500] [--json results.json]

Goal (issue 13): local <= 0.5x volume for the ready worker.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_throughput import prepare_tree
from boot import drop_caches
from pack_env import WORK, build_prefix

from devkit.netvolume import PR538_FILE_SIZE, PR538_FILES, PR538_PARALLEL_S, PR538_SERIAL_S, NetworkVolume
from devkit.seaweed import SeaweedServer
from podenv.archive import pack_tree
from podenv.envbuild import pack_env
from podenv.manifest import Manifest
from podenv.release import layer_document
from podenv.store import open_store

F5_REPO = "models--SWivid--F5-TTS"
F5_REVISION = "84e5a410d9cead4de2f847e7c9369a6440bdfaca"
F5_CHECKPOINT = "F5TTS_v1_Base/model_1250000.safetensors"
F5_CHECKPOINT_BYTES = 1_348_000_000  # the released file's size, within a few MB
_CHECKPOINT_PATH = f"{F5_REPO}/snapshots/{F5_REVISION}/{F5_CHECKPOINT}"
# Run in the env: import torch, then load the checkpoint into one float32 tensor.
READY = (
    "import json, os, struct, time; t = time.perf_counter(); import torch; i = time.perf_counter() - t; "
    f"path = os.path.join(os.environ['HF_HUB_CACHE'], {_CHECKPOINT_PATH!r}); "
    "t = time.perf_counter(); f = open(path, 'rb'); n = struct.unpack('<Q', f.read(8))[0]; "
    "header = json.loads(f.read(n)); data = bytearray(os.fstat(f.fileno()).st_size - 8 - n); "
    "f.readinto(data); w = torch.frombuffer(data, dtype=torch.float32); "
    "print(json.dumps({'import_s': i, 'load_s': time.perf_counter() - t, 'params': w.numel()}))"
)


# torch's own requirements (the pack_env prefix installs torch alone, with --no-deps): pinned,
# so the env can `import torch` as a worker's does.
TORCH_REQUIREMENTS = (
    "typing-extensions==4.16.0", "sympy==1.14.0", "mpmath==1.4.1", "networkx==3.6.1", "jinja2==3.1.6",
    "markupsafe==3.0.4", "filelock==4.2.11", "fsspec==2026.9.0",
)  # fmt: skip


def importable_torch(prefix: Path) -> bool:
    """Make the prefix's torch importable; True if it had to install its requirements."""
    python = str(prefix / "bin" / "python")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
        return False
    target = prefix / "local/lib/python3.11/dist-packages"
    command = ["pip", "install", "--quiet", "--no-deps", "--target", str(target), *TORCH_REQUIREMENTS]
    subprocess.run(command, check=True)
    subprocess.run([python, "-c", "import torch"], check=True)
    return True


def write_checkpoint(path: Path, size: int) -> None:
    """A valid safetensors file: one float32 tensor of random values, ``size`` bytes in all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = (size - 256) // 4
    header = json.dumps({"weights": {"dtype": "F32", "shape": [count], "data_offsets": [0, 4 * count]}})
    header_bytes = header.encode().ljust(256 - 8, b" ")
    with open(path, "wb") as sink:
        sink.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
        remaining = 4 * count
        while remaining:
            piece = min(remaining, 64 << 20)
            sink.write(os.urandom(piece))
            remaining -= piece


def model_tree(work: Path) -> Path:
    tree = work / "f5-model"
    checkpoint = tree / F5_REPO / "snapshots" / F5_REVISION / F5_CHECKPOINT
    if not checkpoint.is_file():
        write_checkpoint(checkpoint, F5_CHECKPOINT_BYTES)
        (tree / F5_REPO / "refs").mkdir(parents=True, exist_ok=True)
        (tree / F5_REPO / "refs" / "main").write_text(F5_REVISION)
    return tree


def publish(store_url: str, env_archive: Path, model_archive: Path) -> Manifest:
    from podenv.archive import ArchiveInfo

    store = open_store(store_url)
    layers = []
    for archive, kind, name, target in (
        (env_archive, "env", "env", "env"),
        (model_archive, "model", "f5-tts", "hf-hub"),
    ):
        info = ArchiveInfo(**json.loads(archive.with_suffix(".info.json").read_text()))
        store.put_blob(archive, info.digest)
        extra = (
            {"model": {"id": "SWivid/F5-TTS", "source": "hf", "revision": F5_REVISION}}
            if kind == "model"
            else None
        )
        layers.append(layer_document(info, kind, name, target, extra))
    document = {
        "schema_version": 1, "name": "bench", "version": "1", "created": "2026-12-01T00:00:00Z",
        "builder": {"podenv": "bench", "host": "bench", "git_commit": None},
        "inputs": {"lock_digest": layers[0]["digest"], "env_spec_digest": layers[0]["digest"],
                   "pixi_environment": "bench"},
        "platform": "linux-64", "cuda": None, "layers": layers, "sbom": {"conda": [], "pypi": []},
    }  # fmt: skip
    manifest = Manifest.from_document(document)
    store.put_release("bench", "1", manifest.canonical_bytes())
    return manifest


def archive_with_info(tree: Path, output: Path, env: bool) -> Path:
    """Pack once (cached beside the archive with its counts: the manifest needs them)."""
    info_path = output.with_suffix(".info.json")
    if output.exists() and info_path.exists():
        return output
    info = pack_env(tree, output) if env else pack_tree(tree, output)
    info_path.write_text(json.dumps(info.__dict__))
    return output


def podenv_boot(store_url: str, root: Path, *options: str, command: list[str] | None = None):
    argv = [sys.executable, "-m", "podenv.cli", "boot", "--store", store_url, "--env", "bench"]
    argv += ["--version", "1", "--root", str(root), *options]
    if command:
        argv += ["--exec", "--", *command]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"boot failed: {result.stderr[-2000:]}")
    return elapsed, result


def calibrate(mount: Path, files: int) -> dict[str, float]:
    """PR #538's test, scaled: 16 KiB files into one directory, serially and with 16 writers."""
    payload = os.urandom(PR538_FILE_SIZE)

    def write(directory: Path, index: int) -> None:
        with open(directory / f"f{index:05d}", "wb") as sink:
            sink.write(payload)

    timings = {}
    for name, writers in (("serial", 1), ("parallel", 16)):
        directory = mount / f"calibrate-{name}"
        directory.mkdir()
        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(lambda index, d=directory: write(d, index), range(files)))
        timings[name] = (time.perf_counter() - started) / files * PR538_FILES
    return {
        "serial_40k_s": timings["serial"],
        "parallel_40k_s": timings["parallel"],
        "pr538_serial_s": PR538_SERIAL_S,
        "pr538_parallel_s": PR538_PARALLEL_S,
        "kinder_serial": PR538_SERIAL_S / timings["serial"],
        "kinder_parallel": PR538_PARALLEL_S / timings["parallel"],
    }


def ready_worker(store_url: str, root: Path, *options: str) -> dict[str, float]:
    drop_caches()
    elapsed, result = podenv_boot(store_url, root, *options, command=["python", "-c", READY])
    inside = json.loads(result.stdout.strip().splitlines()[-1])
    return {"total_s": elapsed, **inside}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=1.0)
    parser.add_argument("--mbps", type=float, default=500.0)
    parser.add_argument("--calibration-files", type=int, default=1000)
    parser.add_argument("--writers", default="1,16,64", help="cold installs on the volume")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if Path("/opt/wheels").is_dir():
        os.environ.setdefault("PIP_FIND_LINKS", "/opt/wheels")
    prefix = build_prefix(WORK, prepare_tree(None))
    if importable_torch(prefix):
        for stale in (WORK / "placement-env.tar.zst", WORK / "placement-env.tar.info.json"):
            stale.unlink(missing_ok=True)
    env_archive = archive_with_info(prefix, WORK / "placement-env.tar.zst", env=True)
    model_archive = archive_with_info(model_tree(WORK), WORK / "placement-f5.tar.zst", env=False)
    scratch = Path(tempfile.mkdtemp(prefix="podenv-bench-placement-", dir=WORK))
    server = SeaweedServer(scratch / "seaweed").start()
    os.environ.update(server.environment)
    store_url = f"s3://{server.bucket}/bench"
    volume = NetworkVolume(
        scratch / "backing", scratch / "volume", arguments.latency_ms / 1000, arguments.mbps * 1e6
    )
    results: dict[str, object] = {"volume": volume.description}
    try:
        manifest = publish(store_url, env_archive, model_archive)
        env_layer = next(layer for layer in manifest.layers if layer.kind == "env")
        print(
            f"env layer: {env_layer.files} files, {env_layer.unpacked_size / 1e6:.0f} MB unpacked, "
            f"{env_layer.size / 1e6:.0f} MB compressed; model layer {F5_CHECKPOINT_BYTES / 1e6:.0f} MB"
        )
        volume.start()
        mount = volume.mountpoint
        calibration = calibrate(mount, arguments.calibration_files)
        results["calibration"] = calibration
        print(calibration_line(volume, calibration), flush=True)

        cold: dict[str, float] = {}
        for writers in [int(n) for n in arguments.writers.split(",")]:
            drop_caches()
            cold[f"volume_w{writers}_s"], _ = podenv_boot(
                store_url, mount / f"cold-w{writers}", "--placement", "volume", "--writers", str(writers)
            )
            print(
                f"cold install, placement=volume, {writers} writers: {cold[f'volume_w{writers}_s']:.1f}s",
                flush=True,
            )
        drop_caches()
        local_cold = ["--placement", "local", "--local-root", str(scratch / "local-cold"), "--writers", "4"]
        cold["local_s"], _ = podenv_boot(store_url, mount / "cold-local", *local_cold)
        print(f"cold install, placement=local: {cold['local_s']:.1f}s", flush=True)
        results["cold"] = cold

        installed_volume = (
            mount / "cold-w16" if (mount / "cold-w16").exists() else next(mount.glob("cold-w*"))
        )
        local_new = ["--placement", "local", "--local-root", str(scratch / "local-new")]
        ready = {
            "volume": ready_worker(store_url, installed_volume, "--placement", "volume"),
            "local": ready_worker(store_url, mount / "cold-local", *local_new, "--writers", "4"),
            "floor": ready_worker(store_url, mount / "cold-local", *local_new),
        }
        results["ready"] = ready
    finally:
        volume.stop()
        server.stop()
    for name, figures in ready.items():
        print(f"ready worker, {name}: {figures['total_s']:.1f}s (import torch {figures['import_s']:.1f}s, "
              f"load weights {figures['load_s']:.1f}s)")  # fmt: skip
    ratio = ready["local"]["total_s"] / ready["volume"]["total_s"]
    install = ready["local"]["total_s"] - ready["floor"]["total_s"]
    results.update(
        local_over_volume=ratio, local_over_floor=ready["local"]["total_s"] / ready["floor"]["total_s"]
    )
    print(
        f"local / volume = {ratio:.2f} (goal <= 0.5); local / floor = {results['local_over_floor']:.2f}: "
        f"the local install costs {install:.1f}s over the floor"
    )
    print(calibration_line(volume, calibration))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
    subprocess.run(["rm", "-rf", str(scratch)], check=False)
    return 0


def calibration_line(volume: NetworkVolume, calibration: dict[str, float]) -> str:
    return (
        f"calibration ({volume.description}): 40k x 16 KiB files would take "
        f"{calibration['serial_40k_s']:.0f}s serially and {calibration['parallel_40k_s']:.0f}s "
        "with 16 writers here; runpod-python PR #538 measured "
        f"{PR538_SERIAL_S:.0f}s and {PR538_PARALLEL_S:.0f}s on a real volume (this volume is "
        f"{calibration['kinder_serial']:.1f}x / {calibration['kinder_parallel']:.1f}x kinder)"
    )


if __name__ == "__main__":
    sys.exit(main())
