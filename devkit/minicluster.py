"""A cluster on one machine for `snakemake-executor-plugin-cluster-generic`: every job runs as
its own process in its own fresh, empty directory, so jobs share nothing but the S3 storage
Snakemake is given (the workflow's sources come through it too: --job-deploy-sources).

    python -m devkit.minicluster submit STATE JOBSCRIPT   # prints the job id
    python -m devkit.minicluster status STATE JOBID       # running, success or failed

STATE is the scheduler's own bookkeeping (a job's pid, exit status and log), which no job
reads. The job directories lie under STATE/jobs/<id>/work and are left for inspection.
"""

import subprocess
import sys
import uuid
from pathlib import Path


def submit(state: Path, jobscript: Path) -> str:
    job_id = uuid.uuid4().hex[:12]
    job = state / "jobs" / job_id
    work = job / "work"
    work.mkdir(parents=True)
    # The job script is the only thing handed over (a real scheduler copies it the same way).
    script = job / "jobscript.sh"
    script.write_bytes(jobscript.read_bytes())
    status = job / "exit"
    wrapped = f"sh {script} > {job / 'log'} 2>&1; echo $? > {status}.partial && mv {status}.partial {status}"
    subprocess.Popen(  # noqa: S602 - the wrapper is ours, paths are ours
        wrapped,
        shell=True,
        cwd=work,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return job_id


def status(state: Path, job_id: str) -> str:
    exit_file = state / "jobs" / job_id / "exit"
    if not exit_file.exists():
        return "running"
    return "success" if exit_file.read_text().strip() == "0" else "failed"


def main(argv: list[str]) -> int:
    command, state, argument = argv
    if command == "submit":
        print(submit(Path(state), Path(argument)))
    elif command == "status":
        print(status(Path(state), argument))
    else:
        raise SystemExit(f"minicluster: unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
