"""Every ``PODENV_*`` variable: its name, default and meaning, in one place.

podenv reads these variables only through this module (`Setting.read`), and the README's
table of them is this module's `markdown_table()` (a test keeps the two equal). The worker
side (`worker/`) cannot import podenv (ADR 0006): it keeps a mirror of its own variables in
`worker/settings.py`, pinned equal to the ones marked ``side="worker"`` here by a test.

Add a new variable here first, then read it with ``settings.NAME.read()``.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    meaning: str
    # Who reads it: "boot" (podenv boot and doctor), "cli" (every podenv command) or
    # "worker" (the handler, in the release's env).
    side: str

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's value; its default when unset or empty."""
        value = (os.environ if environ is None else environ).get(self.name)
        return value or self.default


STORE = Setting("PODENV_STORE", None, "the store: `file:///PATH` or `s3://BUCKET/PREFIX`", "cli")
ENV = Setting("PODENV_ENV", None, "the env whose release `podenv boot` installs", "boot")
VERSION = Setting("PODENV_VERSION", None, "pin a release version (a pin wins over the channel)", "boot")
DIGEST = Setting("PODENV_DIGEST", None, "pin a release digest, `sha256:<hex>`", "boot")
CHANNEL = Setting("PODENV_CHANNEL", "stable", "the channel to follow when nothing is pinned", "boot")
ROOT = Setting("PODENV_ROOT", "/runpod-volume/podenv", "podenv's directory on the volume", "boot")
WRITERS = Setting(
    "PODENV_WRITERS",
    None,
    "file writer threads per installing process"
    " (default: none on a local disk; on a network volume 16, 4 per shard)",
    "boot",
)
JOBS = Setting(
    "PODENV_JOBS",
    None,
    "processes installing a release's shards and layers side by side (default: the CPUs the worker has)",
    "boot",
)
PLACEMENT = Setting(
    "PODENV_PLACEMENT",
    None,
    "where the env layer goes: `local` (the worker's container disk) or `volume`; unset: `local` "
    "under RunPod (RUNPOD_ENDPOINT_ID or RUNPOD_POD_ID set), `volume` elsewhere (ADR 0013)",
    "boot",
)
LOCAL_ROOT = Setting(
    "PODENV_LOCAL_ROOT",
    "/podenv-local",
    "the env's directory on the worker's own (container) disk, with placement `local`",
    "boot",
)
ALLOW_NO_VOLUME = Setting(
    "PODENV_ALLOW_NO_VOLUME",
    None,
    "`1`: boot even when no network volume is mounted (`podenv deploy` sets it)",
    "boot",
)
STORE_ATTEMPTS = Setting(
    "PODENV_STORE_ATTEMPTS", "4", "tries per range of a blob read, each resuming at the last good byte", "cli"
)
STORE_READ_TIMEOUT = Setting(
    "PODENV_STORE_READ_TIMEOUT", "15", "seconds a read from the store may wait for a byte (a stall)", "cli"
)
STORE_MIN_RATE = Setting(
    "PODENV_STORE_MIN_RATE",
    "65536",
    "bytes/s a range must average over the read timeout, or it is a trickle and is retried",
    "cli",
)
STORE_DEADLINE = Setting(
    "PODENV_STORE_DEADLINE", "300", "seconds a whole blob may take to arrive from the store", "cli"
)
STORE_INSTALL_DEADLINE = Setting(
    "PODENV_STORE_INSTALL_DEADLINE",
    "360",
    "seconds all of a cold boot's store reads may take together (every blob of every layer): "
    "RunPod's RUNPOD_INIT_TIMEOUT (420 s) less a minute for the install's tail and the worker's start",
    "boot",
)
LOG_FORMAT = Setting(
    "PODENV_LOG_FORMAT", "text", "`text` or `json` (JSON lines), for podenv and the worker", "cli"
)
ACTOR = Setting("PODENV_ACTOR", None, "who moved a channel, in its history (default `$USER@host`)", "cli")
RELEASE = Setting(
    "PODENV_RELEASE", None, "the release manifest the worker serves; set by `podenv boot --exec`", "worker"
)
DEVICE = Setting(
    "PODENV_DEVICE", None, "the plugins' device (default `cuda` when torch sees a GPU, else `cpu`)", "worker"
)
CONCURRENCY = Setting(
    "PODENV_CONCURRENCY", "1", "jobs a worker runs at once (runpod's `concurrency_modifier`)", "worker"
)
INLINE_MAX_BYTES = Setting(
    "PODENV_INLINE_MAX_BYTES",
    "262144",
    "outputs up to this size return inline (base64), larger ones upload",
    "worker",
)
OUTPUT_BUCKET = Setting("PODENV_OUTPUT_BUCKET", None, "the bucket large outputs are uploaded to", "worker")
AUDIO_PRIVATE_URLS = Setting(
    "PODENV_AUDIO_PRIVATE_URLS",
    None,
    "`1`: job audio URLs may lead to private, loopback or link-local addresses (refused by default)",
    "worker",
)
MAX_INPUT_BYTES = Setting(
    "PODENV_MAX_INPUT_BYTES", "104857600", "the largest audio input a job may send", "worker"
)

SETTINGS: tuple[Setting, ...] = (
    STORE,
    ENV,
    VERSION,
    DIGEST,
    CHANNEL,
    ROOT,
    WRITERS,
    JOBS,
    PLACEMENT,
    LOCAL_ROOT,
    ALLOW_NO_VOLUME,
    STORE_ATTEMPTS,
    STORE_READ_TIMEOUT,
    STORE_MIN_RATE,
    STORE_DEADLINE,
    STORE_INSTALL_DEADLINE,
    LOG_FORMAT,
    ACTOR,
    RELEASE,
    DEVICE,
    CONCURRENCY,
    INLINE_MAX_BYTES,
    OUTPUT_BUCKET,
    MAX_INPUT_BYTES,
    AUDIO_PRIVATE_URLS,
)


def markdown_table() -> str:
    """The README's table of variables."""
    rows = ["| variable | default | read by | meaning |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default is not None else "-"
        rows.append(f"| `{setting.name}` | {default} | {setting.side} | {setting.meaning} |")
    return "\n".join(rows) + "\n"
