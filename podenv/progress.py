"""Progress of long transfers: bytes, rate and ETA at a steady pace, then one summary line."""

import threading
import time
from dataclasses import dataclass

from podenv.log import get_logger

_log = get_logger("progress")


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """A size as people write it: 1073741824, 10G, 10GiB, 512M, 1.5T (powers of 1024)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "")
    try:
        size = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"'{text}' is not a size; write bytes or a number with K, M, G or T") from None
    if size < 0 or size != size:
        raise ValueError(f"'{text}' is not a size; write bytes or a number with K, M, G or T")
    return int(size)


@dataclass(frozen=True)
class ProgressSummary:
    label: str
    done: int
    seconds: float


class Progress:
    """Thread-safe byte counter that logs at most once per ``interval`` seconds.

    ``total`` may be unknown (None); the line then has no percentage or ETA.
    """

    def __init__(self, label: str, total: int | None = None, interval: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last_report = self._start
        self._lock = threading.Lock()

    def update(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._last_report < self.interval:
                return
            self._last_report = now
        self._report(now)

    def _report(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        fields: dict[str, float] = {"bytes": self.done, "rate_bytes_per_s": int(rate)}
        line = f"{self.label}: {human_bytes(self.done)}"
        if self.total:
            remaining = max(self.total - self.done, 0)
            eta = remaining / rate if rate > 0 else float("inf")
            fields.update(total_bytes=self.total, eta_s=round(eta, 1))
            line += f" / {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
            line += f" {human_bytes(rate)}/s ETA {eta:.0f}s"
        else:
            line += f" {human_bytes(rate)}/s"
        _log.info(line, extra={"fields": fields})

    def finish(self) -> ProgressSummary:
        return ProgressSummary(self.label, self.done, time.monotonic() - self._start)
