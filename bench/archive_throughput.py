"""Archive write and read throughput of podenv against ``tar`` and the ``zstd`` CLI.

Measures, side by side in one run, on a real installed package tree (PyTorch 2.13.0 CPU,
about 14,600 files and 760 MB):

* write: ``pack_tree(tree, out)`` vs ``tar -C tree -cf - . | zstd -T0 -3 -q -o out``;
* read: ``extract_file(archive, dir)`` (16 writers) vs ``zstd -d -c archive | tar -x -C dir``,
  both reading the same archive, the one ``pack_tree`` wrote;
* writers: ``extract_file(..., writers=16)`` vs ``extract_file(..., writers=1)``.

Every case first runs once untimed (warm-up: the page cache cannot be dropped reliably, so
all runs read a warm cache), then ``--repeat`` times, interleaved, and the median is
reported. Before each run its output is removed and ``sync`` flushes dirty pages left by
earlier runs, both outside the timed section; a run is timed until it returns, not until
its data is on disk (``pack_tree`` fsyncs its archive, the baselines do not). Ratios are
ours / baseline, so above 1 means ours is slower; MB/s is ours, by unpacked bytes.

Run from the repository root with the venv active::

    python bench/archive_throughput.py [--tree DIR] [--repeat 3] [--json results.json]

Without ``--tree`` the tree is built once into ``bench/.cache/tree`` with
``pip install --target ... --no-deps torch==2.13.0`` (plain pip, which sees the local
wheel). Needs ``tar`` and ``zstd`` on PATH (``apt-get install -y zstd``).
"""

import argparse
import json
import os
import shlex
import shutil
import stat
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from podenv.archive.reader import extract_file
from podenv.archive.writer import ArchiveInfo, pack_tree

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_TREE = BENCH_DIR / ".cache" / "tree"
DEFAULT_WORK = BENCH_DIR / ".cache" / "work"
TREE_PACKAGES = ("torch==2.13.0",)
MIN_FILES = 10_000
MIN_BYTES = 500 * 10**6
MB = 10**6
LEVEL = 3


@dataclass(frozen=True)
class TreeSize:
    files: int
    bytes: int


@dataclass(frozen=True)
class Case:
    """One timed operation: ``run`` produces ``output``, removed before every run."""

    name: str
    command: str
    output: Path
    run: Callable[[], object]


@dataclass(frozen=True)
class Row:
    operation: str
    ours: str
    baseline: str
    ours_s: float
    baseline_s: float
    ratio: float
    ours_mb_s: float


def fail(sentence: str) -> None:
    sys.exit(f"archive_throughput: {sentence}")


def require_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            fail(f"the `{name}` command is not on PATH; install it (e.g. apt-get install -y {name}).")


def measure_tree(root: Path) -> TreeSize:
    """Regular files and symlinks count as files; bytes are regular files' sizes."""
    files = size = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return TreeSize(files, size)


def build_tree(tree: Path) -> None:
    """Install the packages into a scratch directory, then move it into place whole."""
    require_tools("pip")
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = ["pip", "install", "--quiet", "--target", str(partial), "--no-deps"]
    print(f"building tree: {shlex.join([*command, *TREE_PACKAGES])}", flush=True)
    subprocess.run([*command, *TREE_PACKAGES], check=True)
    partial.rename(tree)


def prepare_tree(given: Path | None) -> Path:
    if given is not None:
        if not given.is_dir():
            fail(f"--tree {given} is not a directory.")
        return given.resolve()
    if not DEFAULT_TREE.is_dir():
        DEFAULT_TREE.parent.mkdir(parents=True, exist_ok=True)
        build_tree(DEFAULT_TREE)
    return DEFAULT_TREE


def pipeline(first: list[str], second: list[str]) -> None:
    """Run ``first | second`` without a shell and fail if either side fails."""
    producer = subprocess.Popen(first, stdout=subprocess.PIPE)
    assert producer.stdout is not None
    consumer = subprocess.Popen(second, stdin=producer.stdout)
    producer.stdout.close()
    codes = (consumer.wait(), producer.wait())
    if any(codes):
        raise subprocess.CalledProcessError(max(codes), shlex.join(first) + " | " + shlex.join(second))


def tar_zstd_write(tree: Path, output: Path) -> list[list[str]]:
    return [
        ["tar", "-C", str(tree), "-cf", "-", "."],
        ["zstd", "-T0", f"-{LEVEL}", "-q", "-o", str(output)],
    ]


def zstd_tar_read(archive: Path, target: Path) -> list[list[str]]:
    return [["zstd", "-d", "-c", str(archive)], ["tar", "-x", "-C", str(target)]]


def run_pipeline(commands: list[list[str]], make_dir: Path | None = None) -> None:
    if make_dir is not None:
        make_dir.mkdir()
    pipeline(*commands)


def shell_text(commands: list[list[str]]) -> str:
    return " | ".join(shlex.join(command) for command in commands)


def make_cases(tree: Path, archive: Path, digest: str, work: Path) -> list[Case]:
    ours_out, base_out = work / "write-ours.tar.zst", work / "write-tar.tar.zst"
    base_dir = work / "read-tar"
    write_base, read_base = tar_zstd_write(tree, base_out), zstd_tar_read(archive, base_dir)

    def extract(writers: int) -> Case:
        target = work / f"read-ours-{writers}"
        return Case(
            f"extract_file writers={writers}",
            f"extract_file(archive, dir, expected_digest=..., writers={writers})",
            target,
            lambda: extract_file(archive, target, expected_digest=digest, writers=writers),
        )

    return [
        Case(
            "pack_tree",
            f"pack_tree(tree, out, level={LEVEL})",
            ours_out,
            lambda: pack_tree(tree, ours_out, level=LEVEL),
        ),
        Case("tar | zstd", shell_text(write_base), base_out, lambda: run_pipeline(write_base)),
        extract(16),
        Case(
            "zstd -d | tar -x",
            shell_text(read_base),
            base_dir,
            lambda: run_pipeline(read_base, base_dir),
        ),
        extract(1),
    ]


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def time_once(case: Case) -> float:
    """Time one run, after removing its output and flushing dirty pages (both untimed)."""
    remove(case.output)
    os.sync()
    start = time.perf_counter()
    case.run()
    return time.perf_counter() - start


def run_cases(cases: list[Case], repeat: int) -> dict[str, list[float]]:
    """One untimed warm-up pass of every case, then ``repeat`` interleaved timed rounds."""
    for case in cases:
        print(f"warm-up: {case.name}", flush=True)
        time_once(case)
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for round_number in range(1, repeat + 1):
        for case in cases:
            samples[case.name].append(time_once(case))
        summary = ", ".join(f"{name} {times[-1]:.2f}s" for name, times in samples.items())
        print(f"round {round_number}/{repeat}: {summary}", flush=True)
    return samples


def make_row(operation: str, ours: str, baseline: str, samples: dict[str, list[float]], unpacked: int) -> Row:
    ours_s = statistics.median(samples[ours])
    baseline_s = statistics.median(samples[baseline])
    return Row(operation, ours, baseline, ours_s, baseline_s, ours_s / baseline_s, unpacked / MB / ours_s)


def make_rows(samples: dict[str, list[float]], unpacked: int) -> list[Row]:
    return [
        make_row("write", "pack_tree", "tar | zstd", samples, unpacked),
        make_row("read", "extract_file writers=16", "zstd -d | tar -x", samples, unpacked),
        make_row("writers", "extract_file writers=16", "extract_file writers=1", samples, unpacked),
    ]


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'operation':<9} {'ours s':>8} {'baseline s':>10} {'ratio':>6} {'ours MB/s':>9}  ours vs baseline"
    )
    for row in rows:
        print(
            f"{row.operation:<9} {row.ours_s:>8.2f} {row.baseline_s:>10.2f} {row.ratio:>6.2f} "
            f"{row.ours_mb_s:>9.1f}  {row.ours} vs {row.baseline}"
        )


def print_sizes(ours: int, baseline: int) -> None:
    print(
        f"\narchive size: ours {ours / MB:.1f} MB, tar | zstd {baseline / MB:.1f} MB, "
        f"ratio {ours / baseline:.3f}"
    )


def tool_version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"


def report(
    args: argparse.Namespace,
    tree: Path,
    size: TreeSize,
    info: ArchiveInfo,
    cases: list[Case],
    samples: dict[str, list[float]],
    baseline_size: int,
) -> None:
    rows = make_rows(samples, info.unpacked_size)
    print_table(rows)
    print_sizes(info.size, baseline_size)
    print(
        "\nread and writers rows extract the same archive (ours, from pack_tree); the "
        "writers=16 samples are shared by both rows."
    )
    if args.json is None:
        return
    result = {
        "tree": {"path": str(tree), "files": size.files, "bytes": size.bytes},
        "repeat": args.repeat,
        "warm_up": "one untimed run of every case first; page cache not dropped",
        "between_runs": "output removed, then os.sync(), both untimed",
        "read_archive": "ours (pack_tree output) for both sides",
        "cpu_count": os.cpu_count(),
        "tools": {
            "zstd": tool_version(["zstd", "--version"]),
            "tar": tool_version(["tar", "--version"]),
        },
        "commands": {case.name: case.command for case in cases},
        "samples_s": samples,
        "rows": [asdict(row) for row in rows],
        "archives": {
            "ours_bytes": info.size,
            "baseline_bytes": baseline_size,
            "ratio": info.size / baseline_size,
            "unpacked_bytes": info.unpacked_size,
        },
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help=f"existing tree to pack (default: build {DEFAULT_TREE})")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory, emptied")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory afterwards")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.repeat < 1:
        fail("--repeat must be at least 1.")
    require_tools("tar", "zstd")
    tree = prepare_tree(args.tree)
    size = measure_tree(tree)
    print(f"tree: {tree}: {size.files} files, {size.bytes} bytes ({size.bytes / MB:.1f} MB)")
    if size.files < MIN_FILES or size.bytes < MIN_BYTES:
        print(
            f"warning: the tree is below {MIN_FILES} files or {MIN_BYTES // MB} MB; "
            "results will not be representative."
        )
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = work / "archive.tar.zst"
    info = pack_tree(tree, archive, level=LEVEL)
    cases = make_cases(tree, archive, info.digest, work)
    print(f"cpus: {os.cpu_count()}; warm-up once, then {args.repeat} timed rounds, median.")
    samples = run_cases(cases, args.repeat)
    baseline_size = (work / "write-tar.tar.zst").stat().st_size
    report(args, tree, size, info, cases, samples, baseline_size)
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
