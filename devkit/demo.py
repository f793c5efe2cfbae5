"""The local demo: build, publish, boot, serve, release v2, roll back, on one machine.

    make demo        # or: uv run python -m devkit.demo [--workdir build/demo]

No cloud account, no GPU, no conda channel: a private SeaweedFS on 127.0.0.1 is the store, a
directory is the RunPod volume, the demo project's local channel gives the env (a relocatable
CPython, the `greeting` package, the runpod SDK from PyPI wheels) and a small model. Every
step runs the real thing: Snakemake, `podenv boot --exec`, the handler under the runpod SDK.
Each step prints one line; the logs of every step stay under the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.demoproject import build_channel_dir, create_project, worker_wheels, write_lock_for
from devkit.localworker import LocalWorker
from devkit.seaweed import SeaweedServer
from podenv.catalog import diff_releases, load_release
from podenv.channels import promote, rollback
from podenv.errors import PodenvError
from podenv.progress import human_bytes
from podenv.store import open_store

REPOSITORY = Path(__file__).resolve().parents[1]
PODENV = [sys.executable, "-m", "podenv.cli"]
NAME = "demo"
CHANNEL = "stable"


class DemoError(PodenvError):
    """A step of the demo failed; the message says which, and where its log is."""


@dataclass
class Demo:
    workdir: Path
    store_url: str
    s3: dict[str, str]
    started: float

    @property
    def project(self) -> Path:
        return self.workdir / "project"

    @property
    def volume(self) -> Path:
        return self.workdir / "volume" / "podenv"

    def say(self, step: str, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {step:<9} {line}", flush=True)

    def environment(self, **extra: str) -> dict[str, str]:
        """This process's variables without AWS_* or PODENV_*, plus the demo store's."""
        kept = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "PODENV_"))}
        # Snakemake's rules call `python`: the one running the demo, which has podenv's deps.
        kept["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{kept.get('PATH', '')}"
        return {**kept, **self.s3, **extra}

    def run(self, step: str, command: list[str]) -> str:
        log = self.workdir / "logs" / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, env=self.environment(), check=False)
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise DemoError(f"step '{step}' failed (exit {done.returncode}): {tail[0]} — log: {log}")
        return done.stdout

    def publish(self, version: str, channel: str | None) -> dict[str, Any]:
        arguments = ["publish", "--config", f"version={version}", f"store={self.store_url}"]
        if channel:
            arguments.append(f"channel={channel}")
        snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPOSITORY / "Snakefile"), "-c2"]
        self.run(f"build-{version}", [*snakemake, "--directory", str(self.project), *arguments])
        return json.loads((self.project / "build" / NAME / "published.json").read_text())

    def worker(self, step: str) -> LocalWorker:
        """`podenv boot --exec` into the handler's local API, on the channel's release."""
        command = [*PODENV, "boot", "--root", str(self.volume), "--env", NAME, "--store", self.store_url]
        command += ["--channel", CHANNEL, "--exec", "--", "python", "-m", "worker.handler"]
        # The worker's own disk, for placement local (the volume is self.volume).
        local_root = str(self.workdir / "container-disk")
        environment = self.environment(
            PODENV_LOG_FORMAT="json", PYTHONUNBUFFERED="1", PODENV_LOCAL_ROOT=local_root
        )
        return LocalWorker(command, environment, self.workdir / "logs" / f"{step}.log", cwd=REPOSITORY)

    def boot_and_serve(self, step: str, who: str) -> dict[str, Any]:
        with self.worker(step) as worker:
            answer = worker.runsync({"name": who})
            events = worker.log_events()
        if answer.get("status") != "COMPLETED":
            raise DemoError(f"step '{step}': the worker answered {answer}")
        boot = next(event for event in events if "bytes_fetched" in event)
        load = next(event for event in events if event.get("event") == "plugin_loaded")
        kind = "warm" if boot["warm"] else "cold"
        self.say(
            step,
            f"boot {boot['version']}: {kind} in {boot['phases']['total']:.2f}s, "
            f"fetched {human_bytes(boot['bytes_fetched'])}; model loaded in {load['seconds']:.2f}s",
        )
        self.say(step, f"placement {boot['placement']}: env on {boot['env_location']}; models on the volume")
        output = answer["output"]
        self.say("request", f'POST /runsync {{"name": "{who}"}} -> "{output["text"]}" ({output["model"]})')
        return {"boot": boot, "answer": answer}


@contextmanager
def seaweed(workdir: Path) -> Iterator[SeaweedServer]:
    """A private SeaweedFS, its credentials set in this process for the store calls made here."""
    server = SeaweedServer(workdir / "seaweed").start()
    saved = {name: os.environ.get(name) for name in server.environment}
    os.environ.update(server.environment)
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with seaweed(workdir) as server:
        demo = Demo(workdir, f"s3://{server.bucket}/podenv", server.environment, started)
        return _steps(demo, server)


def _steps(demo: Demo, server: SeaweedServer) -> dict[str, Any]:
    results: dict[str, Any] = {}
    demo.say("store", f"SeaweedFS on {server.endpoint} (loopback only), store {demo.store_url}")
    channel_dir = demo.workdir / "channel"
    build_channel_dir(channel_dir, ("1.0", "1.1"))
    create_project(demo.project, REPOSITORY, demo.store_url, channel_dir, wheels=worker_wheels())
    demo.say("project", f"local conda channel and project in {demo.project} (CPython 3.11, greeting, runpod)")

    v1 = demo.publish("1.0.0", CHANNEL)
    demo.say("publish", f"demo 1.0.0 ({v1['digest']}) built with Snakemake, published, {CHANNEL} -> 1.0.0")
    results["v1"] = demo.boot_and_serve("serve-v1", "RunPod")

    write_lock_for(demo.project, channel_dir, "1.1", worker_wheels())
    v2 = demo.publish("2.0.0", None)
    store = open_store(demo.store_url)
    changes = diff_releases(load_release(store, NAME, "1.0.0"), load_release(store, NAME, "2.0.0"), store)
    changed = ", ".join(
        f"{key} {value['from']} -> {value['to']}" for key, value in changes["changed"].items()
    )
    demo.say(
        "publish",
        f"demo 2.0.0 ({v2['digest']}): {changed}; shares {', '.join(changes['shared_layers'])}, "
        f"a worker on 1.0.0 fetches {human_bytes(changes['fetch_bytes'])} in {changes['fetch_blobs']} blobs "
        f"(the changed packages' shards, of {human_bytes(changes['new_layer_bytes'])})",
    )
    promote(store, NAME, "2.0.0", CHANNEL)
    demo.say("promote", f"{CHANNEL} -> 2.0.0")
    results["v2"] = demo.boot_and_serve("serve-v2", "RunPod")

    pointer = rollback(store, NAME, CHANNEL)
    demo.say("rollback", f"{CHANNEL} -> {pointer['version']} (its previous version)")
    results["rollback"] = demo.boot_and_serve("serve-v1b", "RunPod")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPOSITORY / "build" / "demo", help="wiped first")
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    try:
        results = run_demo(arguments.workdir.resolve())
    except PodenvError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    fetched = human_bytes(results["rollback"]["boot"]["bytes_fetched"])
    print(
        f"demo: done in {time.monotonic() - started:.0f}s: v1 served, v2 served, rolled back to v1 "
        f"with {fetched} fetched; servers stopped; logs in {arguments.workdir / 'logs'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
