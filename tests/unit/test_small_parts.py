"""Digests, names, progress lines and log formats."""

import json
import logging

import pytest

from podenv import log
from podenv.digests import digest_bytes, digest_hex
from podenv.errors import PodenvError
from podenv.names import check_name
from podenv.progress import Progress, human_bytes


def test_digest_form() -> None:
    digest = digest_bytes(b"")
    assert digest == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest_hex(digest) == digest.removeprefix("sha256:")


@pytest.mark.parametrize(
    "bad", ["e3b0", "sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "0" * 63, "sha256:" + "A" * 64]
)
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(PodenvError, match="is not a digest"):
        digest_hex(bad)


@pytest.mark.parametrize(
    ("kind", "value"), [("env name", "tts"), ("version", "1.2.3+cu124"), ("channel", "stable")]
)
def test_good_names(kind: str, value: str) -> None:
    assert check_name(kind, value) == value


@pytest.mark.parametrize(
    ("kind", "value"),
    [("env name", "TTS"), ("version", ".hidden"), ("channel", "a/b"), ("version", "x" * 64)],
)
def test_bad_names(kind: str, value: str) -> None:
    with pytest.raises(PodenvError, match=f"is not a valid {kind}"):
        check_name(kind, value)


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_progress_reports_bytes_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("download", total=1000, interval=0)
    logger = logging.getLogger("podenv")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="podenv"):
            progress.update(250)
    finally:
        logger.removeHandler(caplog.handler)
    record = caplog.records[-1]
    assert record.getMessage().startswith("download: 250 B / 1000 B (25%)")
    assert "ETA" in record.getMessage()
    assert record.fields["bytes"] == 250 and record.fields["total_bytes"] == 1000
    assert progress.finish().done == 250


def test_json_log_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("json")
    try:
        log.get_logger("test").info("hello", extra={"fields": {"bytes": 5}})
    finally:
        log.configure("text")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["msg"] == "hello" and entry["bytes"] == 5 and entry["level"] == "info"
    assert entry["ts"].endswith("Z")


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format must be one of"):
        log.configure("xml")
