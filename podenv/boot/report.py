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
    """A release complete on the volume: its directory, env prefix and code (None: the release
    carries no code layer)."""

    directory: Path
    env_prefix: Path
    version: str
    digest: str
    code: Path | None = None


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
    # The largest resident set of any installing process, in bytes (the memory bound's witness).
    peak_worker_rss: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    placement: str = "volume"
    env_location: str | None = None

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - since, 4)
        return now

    def to_json(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document.update(host=socket.gethostname(), pid=os.getpid())
        return document


# Room taken for a boot's report before the boot writes anything else: a boot that fills
# the disk still has somewhere to say so. JSON allows the spaces that pad it.
REPORT_RESERVE = 16 << 10
# Reports kept on the volume; older ones are removed as new ones are reserved.
REPORTS_KEPT = 200


def report_path(volume_root: Path, report: BootReport) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(report.started))
    return Volume(volume_root).reports / f"{stamp}-{socket.gethostname()}-{os.getpid()}.json"


def reserve_report(volume_root: Path, report: BootReport) -> Path:
    """Create the boot's report file, padded to REPORT_RESERVE, and prune the oldest reports."""
    path = report_path(volume_root, report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b" " * REPORT_RESERVE)
    reports = sorted(path.parent.glob("*.json"), key=lambda found: found.name, reverse=True)
    for old in reports[REPORTS_KEPT:]:
        old.unlink(missing_ok=True)
    return path


def write_report(volume_root: Path, report: BootReport) -> Path:
    """Write the report over its reserved room (no new blocks needed while it fits)."""
    path = report_path(volume_root, report)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n").encode()
    with open(path, "r+b" if path.exists() else "wb") as stream:
        stream.write(data)
        reserved = stream.seek(0, os.SEEK_END)
        stream.seek(len(data))
        stream.write(b" " * max(reserved - len(data), 0))
    return path


def summary_line(report: BootReport) -> str:
    kind = "warm" if report.warm else "cold"
    line = f"boot {report.env} {report.version} ({report.digest}): {kind} in {report.phases['total']:.2f}s"
    if report.env_location:
        line += f", env on {report.env_location}"
    if not report.warm:
        line += (
            f", fetched {human_bytes(report.bytes_fetched)}, wrote {human_bytes(report.bytes_written)} "
            f"in {report.files} files"
        )
    return line
