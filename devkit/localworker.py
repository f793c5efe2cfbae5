"""A worker handler run locally under the runpod SDK's ``--rp_serve_api``, for the demo and tests.

It starts the command given (usually ``podenv boot --exec -- python -m worker.handler`` or the
env's python directly) on a free loopback port, waits until the API answers, and talks to it
the way a RunPod client would: ``/runsync``, or ``/run`` then ``/status``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from devkit.processes import stop_process_group
from podenv.errors import PodenvError


class LocalWorkerError(PodenvError):
    """The local worker exited or never answered."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalWorker:
    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
        start_timeout: float = 300.0,
    ) -> None:
        self.port = free_port()
        serve = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(self.port)]
        self.command = [*command, *serve]
        self.env, self.log_path, self.cwd, self.start_timeout = env, log_path, cwd, start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``PODENV_LOG_FORMAT=json``) the worker has written so far."""
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def start(self) -> LocalWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalWorkerError(
                    f"the worker exited with code {self.process.returncode} before serving; "
                    f"its log ends:\n{self.log_text()[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise LocalWorkerError(
            f"the worker did not answer within {self.start_timeout:.0f}s; see {self.log_path}."
        )

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> LocalWorker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _post(self, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def runsync(self, job_input: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """One job through ``/runsync``: the response (``status``, ``output`` or ``error``)."""
        return self._post("/runsync", {"input": job_input}, timeout)

    def run(self, job_input: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """One job through ``/run`` and then ``/status/<id>``, as an async client does."""
        queued = self._post("/run", {"input": job_input}, timeout)
        return self._post(f"/status/{queued['id']}", None, timeout)
