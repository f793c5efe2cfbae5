"""Relocating prefixes in text and binary files, and the driver check."""

import json
import os
import random
import re
from pathlib import Path

import pytest

from podenv import relocate as relocate_module
from podenv.gpu import DriverTooOldError, check_driver
from podenv.relocate import RELOCATIONS_FILE, RelocationError, relocate

PLACEHOLDER = "/opt/" + "placehold_" * 10


def _env(tmp_path: Path, files: dict[str, bytes], records: list[list[str]]) -> Path:
    prefix = tmp_path / "env"
    for name, data in files.items():
        (prefix / name).parent.mkdir(parents=True, exist_ok=True)
        (prefix / name).write_bytes(data)
    (prefix / RELOCATIONS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (prefix / RELOCATIONS_FILE).write_text(json.dumps({"prefixes": records}))
    return prefix


def test_text_and_binary_files_get_the_new_prefix(tmp_path: Path) -> None:
    binary = b"\x7fELF" + PLACEHOLDER.encode() + b"/lib\x00rest" + PLACEHOLDER.encode() + b"\x00\x01"
    prefix = _env(
        tmp_path,
        {"bin/tool": f"#!{PLACEHOLDER}/bin/python\nprint('{PLACEHOLDER}')\n".encode(), "lib/x.so": binary},
        [["bin/tool", PLACEHOLDER, "text"], ["lib/x.so", PLACEHOLDER, "binary"]],
    )
    os.chmod(prefix / "bin/tool", 0o755)

    changed = relocate(prefix, "/new/place")

    assert changed == 2
    assert (prefix / "bin/tool").read_text() == "#!/new/place/bin/python\nprint('/new/place')\n"
    assert os.access(prefix / "bin/tool", os.X_OK)
    relocated = (prefix / "lib/x.so").read_bytes()
    assert len(relocated) == len(binary)
    assert relocated.startswith(b"\x7fELF/new/place/lib\x00")
    assert b"rest/new/place\x00" in relocated and relocated.endswith(b"\x00\x01")
    assert PLACEHOLDER.encode() not in relocated


def test_files_without_the_placeholder_are_left_alone(tmp_path: Path) -> None:
    prefix = _env(tmp_path, {"a.txt": b"nothing here"}, [["a.txt", PLACEHOLDER, "text"]])
    before = (prefix / "a.txt").stat().st_mtime_ns
    assert relocate(prefix, "/new") == 0
    assert (prefix / "a.txt").stat().st_mtime_ns == before


def test_a_prefix_longer_than_a_binary_placeholder_is_refused(tmp_path: Path) -> None:
    prefix = _env(tmp_path, {"lib/x.so": b"/short\x00"}, [["lib/x.so", "/short", "binary"]])
    with pytest.raises(RelocationError, match="shorter PODENV_ROOT"):
        relocate(prefix, "/a/much/longer/prefix")


def test_an_env_without_records_needs_nothing(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    assert relocate(tmp_path / "env", "/x") == 0


@pytest.mark.parametrize(
    ("required", "found"),
    [(None, "12.4"), ("12.4", None), ("12.4", "12.4"), ("12", "12.8"), ("12.4", "13.0")],
)
def test_drivers_that_are_new_enough_or_unknown_pass(required: str | None, found: str | None) -> None:
    check_driver(required, found, "tts 1.0.0")


def test_an_old_driver_is_refused_in_one_sentence() -> None:
    with pytest.raises(DriverTooOldError) as caught:
        check_driver("12.4", "12.2", "tts 1.0.0")
    message = str(caught.value)
    assert "supports CUDA 12.2, but tts 1.0.0 needs CUDA 12.4 or later" in message
    assert "\n" not in message


def _relocated_whole(data: bytes, placeholder: bytes, new: bytes, mode: str) -> bytes:
    """The rule applied to a whole file at once (what relocation did before it streamed)."""
    if mode == "text":
        return data.replace(placeholder, new)
    pattern = re.compile(re.escape(placeholder) + rb"([^\0]*?)\0")
    return pattern.sub(
        lambda m: new + m.group(1) + b"\0" * (len(m.group(0)) - len(new) - len(m.group(1))), data
    )


@pytest.mark.parametrize("mode", ["text", "binary"])
def test_streamed_relocation_equals_the_whole_file_rule_across_chunk_boundaries(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny chunks put every occurrence and every string's NUL across boundaries; strings
    without a NUL before the end are left as they were."""
    monkeypatch.setattr(relocate_module, "_CHUNK", 7)
    placeholder, new = b"/ph/placeholder", b"/new"
    rng = random.Random(14)
    for _ in range(300):
        parts = [
            rng.choice([placeholder, b"\0", b"x", b"yz/", placeholder[:5]]) for _ in range(rng.randint(0, 30))
        ]
        data = b"".join(parts)
        expected = _relocated_whole(data, placeholder, new, mode)
        record = relocate_module.Relocation("f", placeholder.decode(), mode)
        assert relocate_module.relocated(data, record, new.decode()) == expected, data
