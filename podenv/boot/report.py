"""What one boot gave (the ready release) and did (phases, bytes, layers, warnings: the report
written to the volume and logged)."""

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podenv.progress import human_bytes
from podenv.volume import Volume


@dataclass(frozen=True)
class ReadyRelease:
    """A release complete on the volume: its directory and env prefix."""

    directory: Path
    env_prefix: Path
    version: str
    digest: str


@dataclass
class BootReport:
    env: str
    started: float = field(default_factory=time.time)
    version: str | None = None
    digest: str | None = None
    warm: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    bytes_fetched: int = 0
    bytes_written: int = 0
    files: int = 0
    layers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - since, 4)
        return now

    def to_json(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document.update(host=socket.gethostname(), pid=os.getpid())
        return document


def write_report(volume_root: Path, report: BootReport) -> Path:
    reports = Volume(volume_root).reports
    reports.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(report.started))
    path = reports / f"{stamp}-{socket.gethostname()}-{os.getpid()}.json"
    path.write_text(json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def summary_line(report: BootReport) -> str:
    kind = "warm" if report.warm else "cold"
    line = f"boot {report.env} {report.version} ({report.digest}): {kind} in {report.phases['total']:.2f}s"
    if not report.warm:
        line += (
            f", fetched {human_bytes(report.bytes_fetched)}, wrote {human_bytes(report.bytes_written)} "
            f"in {report.files} files"
        )
    return line
