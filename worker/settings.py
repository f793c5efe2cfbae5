"""The worker's ``PODENV_*`` variables and their defaults: a mirror of the ``side="worker"``
entries (and ``PODENV_LOG_FORMAT``) of `podenv/settings.py`, where each is explained. The
worker cannot import podenv (ADR 0006); `tests/unit/test_contracts.py` keeps the two equal.
"""

import os
from collections.abc import Mapping

DEFAULTS: dict[str, str | None] = {
    "PODENV_LOG_FORMAT": "text",
    "PODENV_RELEASE": None,
    "PODENV_DEVICE": None,
    "PODENV_CONCURRENCY": "1",
    "PODENV_INLINE_MAX_BYTES": "262144",
    "PODENV_OUTPUT_BUCKET": None,
    "PODENV_MAX_INPUT_BYTES": "104857600",
    "PODENV_AUDIO_PRIVATE_URLS": None,
}


def read(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value; its default when unset or empty."""
    value = (os.environ if environ is None else environ).get(name)
    return value or DEFAULTS[name]


def read_int(name: str, environ: Mapping[str, str] | None = None) -> int:
    """A numeric variable (each has a default)."""
    return int(read(name, environ) or str(DEFAULTS[name]))
