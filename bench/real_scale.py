"""Real scale (`make bench-real`, not in CI): the speech env, built through our own pipeline, packed,
installed cold from SeaweedFS, and upgraded by one package, against the baselines, in one run.

The env: the local channel's CPython plus the hashed PyPI pins of `tests/speech/requirements.txt`
(torch 2.8.0 with its CUDA wheels, torchaudio, f5-tts, whisperx: about 60,000 files, 9 GB),
in a pixi.lock written with py-rattler, built by `snakemake build_env` once into
``bench/.cache/real-scale`` (about 4 GB of downloads the first time; the install step of that
rule, ``podenv env install``, once more into a kept prefix for the packers). Then:

* pack: ``podenv.envbuild.pack_env`` (package-sharded) against conda-pack's default tar.zst,
  same prefix, read into the page cache first as the pipeline (install, then pack, in one job)
  has it; seconds and bytes;
* cold install from SeaweedFS to local disk, the page cache dropped before each round where
  the machine allows it: `podenv boot` of the pipeline's layer with 1 process and with every
  CPU, against the naive sequence as a shell runs it (``curl`` of one tar.zst of the same env,
  ``sha256sum``, ``zstd -d | tar -x``, conda-unpack);
* upgrade: the same env with one PyPI package at another version (``--upgrade``, default
  ``tqdm<4.70.1``), built through the pipeline too and booted over the first: bytes fetched
  against the env's total, how many shards the two envs share and which differ.

About 45 GB of disk: the package cache, the prefix, both layers, one tar.zst, the store and
one installed env at a time.

Run from the repository root::

    make bench-real        # or: python bench/real_scale.py [--repeat 2] [--json results.json]

Goals (issue 12), on a 2-core machine: cold install <= 0.6x the naive sequence; pack >= 5x
conda-pack at <= 1.25x its size; an upgrade of one package fetches <= 5% of the env's bytes;
two envs that share torch share every common package's shard.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boot import cold_naive, cold_ours, drop_caches, manifest_for, publish
from pack_env import conda_pack_default

from devkit.demoproject import PypiWheel, build_channel_dir, create_project
from devkit.seaweed import SeaweedServer
from podenv.archive import ArchiveInfo, write_archive
from podenv.digests import digest_file
from podenv.envbuild import env_entries, pack_env
from podenv.release import layer_document, sharded_layer_document
from podenv.shards import INDEX_FILE, ShardIndex, layer_blobs, parse_index

BENCH_DIR = Path(__file__).resolve().parent
REPOSITORY = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache" / "real-scale"
REQUIREMENTS_IN = REPOSITORY / "tests" / "speech" / "requirements.in"
REQUIREMENTS = REPOSITORY / "tests" / "speech" / "requirements.txt"
PLATFORM = ["--python-platform", "x86_64-manylinux_2_28", "--python-version", "3.11"]


def wheel_tags() -> set[str]:
    """Tags a CPython 3.11 on manylinux_2_28 x86_64 installs."""
    from packaging.tags import compatible_tags, cpython_tags

    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    tags = [*cpython_tags((3, 11), platforms=platforms), *compatible_tags((3, 11), platforms=platforms)]
    return {str(tag) for tag in tags}


def pinned_wheels(label: str, override: str | None) -> list[PypiWheel]:
    """The pins of requirements.txt (one overridden, if asked) as wheels with URL and hash (uv)."""
    lock = CACHE / f"pylock.{label}.toml"
    if not lock.exists():
        # The pins of requirements.txt, less the package the override moves.
        moved = re.split(r"[<>=!~ ]", override)[0] if override else None
        pins = [line.split()[0] for line in REQUIREMENTS.read_text().splitlines() if "==" in line]
        constraints = CACHE / f"constraints-{label}.txt"
        constraints.write_text("".join(f"{pin}\n" for pin in pins if pin.split("==")[0] != moved))
        command = [sys.executable, "-m", "uv", "pip", "compile", str(REQUIREMENTS_IN), *PLATFORM]
        command += ["--constraint", str(constraints), "-o", str(lock)]
        if override:
            overrides = CACHE / f"override-{label}.txt"
            overrides.write_text(override + "\n")
            command += ["--override", str(overrides)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    from packaging.utils import parse_wheel_filename

    tags = wheel_tags()
    pins = []
    for package in tomllib.loads(lock.read_text())["packages"]:
        usable = [
            wheel
            for wheel in package.get("wheels", [])
            if any(str(tag) in tags for tag in parse_wheel_filename(wheel["url"].rsplit("/", 1)[1])[3])
        ]
        # A package with no wheel (antlr4-python3-runtime) is locked as its sdist, as pixi would.
        chosen = usable[0] if usable else package["sdist"]
        pins.append(PypiWheel(package["name"], package["version"], chosen["url"], chosen["hashes"]["sha256"]))
    return pins


def _project(label: str, override: str | None) -> Path:
    project = CACHE / f"project-{label}"
    if not (project / "pixi.lock").exists():
        channel = CACHE / "channel"
        if not channel.is_dir():
            build_channel_dir(channel)
        wheels = pinned_wheels(label, override)
        create_project(project, REPOSITORY, f"file://{project}/store", channel, wheels=wheels)
    return project


def _tool_environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def pipeline_layer(label: str, override: str | None) -> Path:
    """The env's layer as `snakemake build_env` builds it on a build box (once, into the cache)."""
    project = _project(label, override)
    shards = project / "build" / "demo" / "env-shards"
    if (shards / INDEX_FILE).exists():
        return shards
    # One package cache for every build: the upgrade downloads only the changed wheel.
    command = [sys.executable, "-m", "snakemake", "-s", str(REPOSITORY / "Snakefile"), "-c2"]
    command += ["--directory", str(project), "build_env", "--config", f"cache_dir={CACHE / 'packages'}"]
    print(f"building {label} through the pipeline (first time only)", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=_tool_environment())
    print(f"built {label} in {time.perf_counter() - started:.0f}s", flush=True)
    (shards.parent / "env-shards.tar").unlink()  # the rule's bundle for a cluster: 4 GB not needed here
    return shards


def installed_prefix() -> Path:
    """The base env installed as the pipeline's rule installs it (`podenv env install`, the first
    half of `podenv env build`), kept so that both packers read the same prefix."""
    prefix = CACHE / "prefix"
    if (prefix / "conda-meta").is_dir():
        return prefix
    shutil.rmtree(prefix, ignore_errors=True)  # what a killed run left
    project = _project("base", None)
    command = [sys.executable, "-m", "podenv.cli", "env", "install", "envs/demo.yaml", "--lock", "pixi.lock"]
    command += ["--prefix", str(prefix), "--cache", str(CACHE / "packages")]
    subprocess.run(
        command, check=True, cwd=project, env={**_tool_environment(), "PYTHONPATH": str(REPOSITORY)}
    )
    return prefix


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def warm(prefix: Path) -> None:
    """Read every file once: the pipeline packs right after it installs (one job), so the
    prefix is in the page cache when a build box packs it."""
    for path in prefix.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass


def pack_figures(prefix: Path) -> dict:
    """Ours against conda-pack's default tar.zst, one prefix, in the page cache for both."""
    ours_out, baseline_out = CACHE / "pack-podenv", CACHE / "pack-conda-pack.tar.zst"
    shutil.rmtree(ours_out, ignore_errors=True)
    baseline_out.unlink(missing_ok=True)
    warm(prefix)
    ours = timed(lambda: pack_env(prefix, ours_out))
    warm(prefix)
    baseline = timed(lambda: conda_pack_default(prefix, baseline_out))
    index = parse_index((ours_out / INDEX_FILE).read_bytes(), digest_file(ours_out / INDEX_FILE))
    figures = {"pack_podenv_s": ours, "pack_conda_pack_s": baseline, "pack_speedup": baseline / ours}
    figures.update(podenv_bytes=index.size, conda_pack_bytes=baseline_out.stat().st_size)
    figures["size_ratio"] = index.size / figures["conda_pack_bytes"]
    print(
        f"pack: podenv {ours:.1f}s vs conda-pack {baseline:.1f}s: {figures['pack_speedup']:.1f}x; "
        f"size {index.size / 1e9:.2f} GB vs {figures['conda_pack_bytes'] / 1e9:.2f} GB: "
        f"{figures['size_ratio']:.2f}; {len(index.shards)} shards, {index.files} files",
        flush=True,
    )
    shutil.rmtree(ours_out)
    baseline_out.unlink()  # 8 GB between them: the installs need the room
    return figures


def read_layer(output: Path) -> tuple[dict, dict[str, Path], ShardIndex]:
    index = parse_index((output / INDEX_FILE).read_bytes(), digest_file(output / INDEX_FILE))
    return sharded_layer_document(index, "env", "env", "env"), layer_blobs(output, index), index


def share_blobs(base: Path, other: Path) -> None:
    """Hard-link the other build's shards that the base build has too (same name: same digest)."""
    for path in other.iterdir():
        twin = base / path.name
        if path.name != INDEX_FILE and twin.exists() and not path.samefile(twin):
            path.unlink()
            os.link(twin, path)


def shard_sharing(base: ShardIndex, other: ShardIndex) -> tuple[int, list[str]]:
    """Shards of the same name with the same digest in both, and the names whose digest differs."""
    digests = {shard.name: shard.digest for shard in base.shards}
    same = [shard.name for shard in other.shards if digests.get(shard.name) == shard.digest]
    differ = [shard.name for shard in other.shards if shard.name in digests and shard.name not in same]
    return len(same), differ


def one_blob(prefix: Path) -> tuple[dict, Path]:
    """The env as one tar.zst (the old format), for the naive sequence."""
    blob = CACHE / "env-one-blob.tar.zst"
    if not blob.exists():
        write_archive(env_entries(prefix).values(), blob)
    info = ArchiveInfo(digest_file(blob), blob.stat().st_size, 0, 0)
    return layer_document(info, "env", "env", "env"), blob


def install_rounds(server: SeaweedServer, store_url: str, key: str, single: dict, repeat: int) -> dict:
    cpus = len(os.sched_getaffinity(0))
    runs: dict[str, list[float]] = {"naive": [], "jobs1": [], f"jobs{cpus}": []}
    for number in range(repeat):
        round_dir = Path(tempfile.mkdtemp(prefix="round-", dir=CACHE))
        try:
            drop_caches()
            runs["naive"].append(cold_naive(server, key, single["digest"], round_dir / "naive"))
            shutil.rmtree(round_dir / "naive")
            for jobs in (1, cpus):
                drop_caches()
                runs[f"jobs{jobs}"].append(cold_ours(store_url, "bench", round_dir / f"jobs{jobs}", jobs))
                shutil.rmtree(round_dir / f"jobs{jobs}")
        finally:
            shutil.rmtree(round_dir, ignore_errors=True)
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in runs.items()), flush=True)
    results: dict = {f"install_{name}_s": min(times) for name, times in runs.items()}
    results["install_ratio"] = results[f"install_jobs{cpus}_s"] / results["install_naive_s"]
    results["install_ratio_jobs1"] = results["install_jobs1_s"] / results["install_naive_s"]
    results["install_scaling_1_to_n"] = results["install_jobs1_s"] / results[f"install_jobs{cpus}_s"]
    results["cpus"] = cpus
    return results


def upgrade_fetched(store_url: str, upgraded: dict, blobs: dict[str, Path]) -> int:
    """Bytes a worker on the base release fetches to boot the upgrade (its boot report)."""
    publish(store_url, "up", manifest_for("up", upgraded, 2), blobs)
    root = Path(tempfile.mkdtemp(prefix="upgrade-", dir=CACHE))
    try:
        cold_ours(store_url, "bench", root, len(os.sched_getaffinity(0)))
        cold_ours(store_url, "up", root, len(os.sched_getaffinity(0)))
        reports = sorted((root / "boot-reports").glob("*.json"), key=os.path.getmtime)
        return int(json.loads(reports[-1].read_text())["bytes_fetched"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def writes_absorbed(enabled: bool) -> Iterator[None]:
    """Let the page cache hold a whole install's writes (vm.dirty_ratio 80%), as root: this
    machine's disk writes slower than a worker's NVMe, and would otherwise bound both sides."""
    knobs = [Path("/proc/sys/vm/dirty_ratio"), Path("/proc/sys/vm/dirty_background_ratio")]
    saved = [knob.read_text() for knob in knobs]
    if enabled:
        for knob, value in zip(knobs, ("80\n", "60\n"), strict=True):
            knob.write_text(value)
    try:
        yield
    finally:
        for knob, value in zip(knobs, saved, strict=True):
            with contextlib.suppress(OSError):
                knob.write_text(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--upgrade", default="tqdm<4.70.1", help="the one package at another version")
    parser.add_argument("--skip-pack", action="store_true", help="measure installs and the upgrade only")
    parser.add_argument(
        "--absorb-writes", action="store_true", help="let the page cache take the installs' writes (root)"
    )
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    base_shards = pipeline_layer("base", None)
    upgrade_shards = pipeline_layer("upgrade", arguments.upgrade)
    share_blobs(base_shards, upgrade_shards)
    prefix = installed_prefix()
    results = {} if arguments.skip_pack else pack_figures(prefix)
    layer, blobs, index = read_layer(base_shards)
    upgraded, upgraded_blobs, upgraded_index = read_layer(upgrade_shards)
    single, blob = one_blob(prefix)
    scratch = Path(tempfile.mkdtemp(prefix="seaweed-", dir=CACHE))
    server = SeaweedServer(scratch / "seaweed").start()
    os.environ.update(server.environment)
    store_url = f"s3://{server.bucket}/real"
    try:
        publish(store_url, "bench", manifest_for("bench", layer, 2), blobs)
        publish(store_url, "old", manifest_for("old", single, 1), {single["digest"]: blob})
        key = f"real/blobs/sha256/{single['digest'].removeprefix('sha256:')}"
        print(
            f"env: {index.files} files, {index.unpacked_size / 1e9:.2f} GB unpacked, {len(index.shards)} "
            f"shards, {index.size / 1e9:.2f} GB; one blob {single['size'] / 1e9:.2f} GB",
            flush=True,
        )
        with writes_absorbed(arguments.absorb_writes):
            results.update(install_rounds(server, store_url, key, single, arguments.repeat))
        fetched = upgrade_fetched(store_url, upgraded, upgraded_blobs)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    same, differ = shard_sharing(index, upgraded_index)
    results.update(upgrade_fetched_bytes=fetched, upgrade_env_bytes=upgraded["size"])
    results.update(
        upgrade_fraction=fetched / upgraded["size"], shared_shards=same, shards=len(upgraded_index.shards)
    )
    results["changed_shards"] = differ
    results["writes_absorbed"] = arguments.absorb_writes
    cpus = results["cpus"]
    print(
        f"install: podenv {cpus} processes {results[f'install_jobs{cpus}_s']:.1f}s, 1 process "
        f"{results['install_jobs1_s']:.1f}s, naive {results['install_naive_s']:.1f}s: ratio "
        f"{results['install_ratio']:.2f} (1 process {results['install_ratio_jobs1']:.2f}; 1 -> {cpus} "
        f"processes {results['install_scaling_1_to_n']:.2f}x)\n"
        f"upgrade ({arguments.upgrade}): fetched {fetched / 1e6:.1f} MB of {upgraded['size'] / 1e9:.2f} GB "
        f"({results['upgrade_fraction'] * 100:.2f}%); the two envs share {same} of "
        f"{len(upgraded_index.shards)} shards; shards that differ: {', '.join(differ) or 'none'}"
    )
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
