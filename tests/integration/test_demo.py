"""The README's first command, end to end: `python -m devkit.demo`, its output checked line by line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from podenv.runpod.mount import default_placement
from tests.integration.boot_support import REPOSITORY, clean_environment


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (a server the demo left behind)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in text:
            found.append(text)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    workdir = tmp_path_factory.mktemp("demo") / "work"
    done = subprocess.run(
        [sys.executable, "-m", "devkit.demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env=clean_environment(),
        timeout=900,
        check=False,
    )
    return done, workdir


def _line(output: str, step: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(rf"\[\s*[\d.]+s\] {re.escape(step)}\s", line)]


def test_the_demo_succeeds_and_says_so_in_its_last_line(demo) -> None:
    done, _ = demo
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("demo: done in ")
    assert "rolled back to v1 with 0 B fetched" in done.stdout


def test_v1_v2_and_the_rollback_each_answer_a_request(demo) -> None:
    answers = _line(demo[0].stdout, "request")
    assert len(answers) == 3
    assert answers[0].endswith('-> "hello RunPod from greeting 1.0" (podenv/demo-model@r1)')
    assert answers[1].endswith('-> "hello RunPod from greeting 1.1" (podenv/demo-model@r1)')
    assert answers[2].endswith('-> "hello RunPod from greeting 1.0" (podenv/demo-model@r1)')


def test_v2_changes_one_package_and_shares_the_model_layer(demo) -> None:
    v2 = _line(demo[0].stdout, "publish")[1]
    assert "demo 2.0.0 (sha256:" in v2
    assert "conda:greeting 1.0 -> 1.1; shares code, demo-model" in v2
    assert _line(demo[0].stdout, "promote") and _line(demo[0].stdout, "rollback")[0].endswith(
        "stable -> 1.0.0 (its previous version)"
    )


def _bytes(figure: str) -> float:
    number, unit = figure.split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(unit)


def test_first_boots_are_cold_and_the_boot_after_rollback_fetches_nothing(demo) -> None:
    output = demo[0].stdout
    assert re.search(r"boot 1\.0\.0: cold in [\d.]+s, fetched [1-9][\d.]* MiB", _line(output, "serve-v1")[0])
    assert re.search(r"boot 2\.0\.0: cold in [\d.]+s, fetched [1-9][\d.]* \w+", _line(output, "serve-v2")[0])
    assert re.search(r"boot 1\.0\.0: warm in [\d.]+s, fetched 0 B;", _line(output, "serve-v1b")[0])


def test_the_demo_says_where_the_env_went(demo) -> None:

    _, workdir = demo
    lines = [line for line in _line(demo[0].stdout, "serve-v1") if "placement" in line]
    assert len(lines) == 1, demo[0].stdout
    placement = default_placement({})  # the demo runs outside RunPod, PODENV_PLACEMENT unset
    where = workdir / "container-disk" if placement == "local" else workdir / "volume" / "podenv"
    assert (
        f"placement {placement}: env on the {'local disk' if placement == 'local' else 'volume'} " in lines[0]
    )
    assert f"({where}/layers/" in lines[0] and lines[0].endswith("; models on the volume")


def test_v2_fetches_only_the_changed_packages_shards_as_the_diff_said(demo) -> None:
    output = demo[0].stdout
    v1 = re.search(r"cold in [\d.]+s, fetched ([\d.]+ \w+)", _line(output, "serve-v1")[0])[1]
    v2 = re.search(r"cold in [\d.]+s, fetched ([\d.]+ \w+)", _line(output, "serve-v2")[0])[1]
    said = re.search(r"a worker on 1\.0\.0 fetches ([\d.]+ \w+) in \d+ blobs", _line(output, "publish")[1])
    assert said is not None and said[1] == v2
    assert _bytes(v2) < _bytes(v1) / 20, (v1, v2)  # the greeting shard and the small unowned one


def test_the_demo_leaves_no_server_running_and_keeps_its_logs(demo) -> None:
    _, workdir = demo
    assert _processes_using(workdir) == []
    logs = sorted(path.name for path in (workdir / "logs").iterdir())
    assert logs == ["build-1.0.0.log", "build-2.0.0.log", "serve-v1.log", "serve-v1b.log", "serve-v2.log"]
