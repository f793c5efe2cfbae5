"""Is the first job as fast as the hundredth? Our handler against a lazy-loading baseline.

In one run, on the WhisperX plugin with the speech tests' release (a real Whisper tiny.en, a
wav2vec2 alignment model of the real architecture, 2.95 s of real speech), in the speech venv
(torch 2.8.0 on CPU), both under the runpod SDK's local API:

* ours: ``python -m worker.handler`` (every model loaded before ``runpod.serverless.start``);
* lazy: ``bench/lazy_handler.py`` (the same plugin, loaded inside the first job).

For each: start to ready, the first job's latency as a client sees it (/runsync), and the
median of the next jobs. Run from the repository root with the dev venv::

    python bench/first_job.py [--jobs 6] [--json results.json]
"""

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.localworker import LocalWorker
from tests.speech.support import ensure_speech_python, speech_worker
from tests.speech.whisperx_fixtures import SPEECH_WAV, FileServer, boot_test_asr_release

LAZY_HANDLER = Path(__file__).with_name("lazy_handler.py")


def measure(worker: LocalWorker, jobs: int) -> dict[str, float]:
    job = {"audio": base64.b64encode(SPEECH_WAV.read_bytes()).decode()}
    started = time.monotonic()
    worker.start()
    ready = time.monotonic() - started
    latencies = []
    try:
        for _ in range(jobs):
            sent = time.monotonic()
            answer = worker.runsync(job)
            latencies.append(time.monotonic() - sent)
            assert answer["status"] == "COMPLETED", answer
    finally:
        worker.stop()
    later = statistics.median(latencies[1:])
    return {
        "ready_s": ready,
        "first_job_s": latencies[0],
        "later_median_s": later,
        "first_over_later": latencies[0] / later,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    python = ensure_speech_python()
    with tempfile.TemporaryDirectory(prefix="podenv-bench-") as work:
        work = Path(work)
        served = work / "served"
        served.mkdir()
        with FileServer(served) as files:
            release = boot_test_asr_release(work / "asr", python, files, served)
        ours = speech_worker(python, release, work / "ours.log")
        lazy = speech_worker(python, release, work / "lazy.log")
        lazy.command = [str(python), str(LAZY_HANDLER), *lazy.command[3:]]
        results = {"ours": measure(ours, arguments.jobs), "lazy": measure(lazy, arguments.jobs)}
    print(f"{'':6} {'ready':>8} {'first job':>10} {'later (median)':>15} {'first/later':>12}")
    for name, row in results.items():
        print(
            f"{name:6} {row['ready_s']:7.2f}s {row['first_job_s']:9.2f}s {row['later_median_s']:14.2f}s "
            f"{row['first_over_later']:11.2f}x"
        )
    ratio = results["ours"]["first_job_s"] / results["lazy"]["first_job_s"]
    print(f"first job, ours / lazy: {ratio:.2f}")
    if arguments.json:
        arguments.json.write_text(json.dumps({**results, "first_job_ours_over_lazy": ratio}, indent=1) + "\n")


if __name__ == "__main__":
    main()
