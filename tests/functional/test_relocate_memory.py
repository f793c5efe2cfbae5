"""Relocation streams each listed file: a large relocated file costs a constant in memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from podenv.relocate import RELOCATIONS_FILE

PLACEHOLDER = b"/opt/" + b"placehold_" * 10
SIZE = 256 << 20


def _write_big(path: Path, mode: str) -> None:
    """A file of SIZE bytes with the placeholder at its start, middle and end."""
    occurrence = PLACEHOLDER + b"/lib\0" if mode == "binary" else PLACEHOLDER + b"/bin\n"
    filler = b"a" * (1 << 20)
    with path.open("wb") as stream:
        for index in range(SIZE >> 20):
            stream.write(occurrence if index in (0, (SIZE >> 21), (SIZE >> 20) - 1) else b"")
            stream.write(filler)
        stream.write(occurrence)


def test_a_large_relocated_file_costs_bounded_memory(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "lib").mkdir(parents=True)
    _write_big(prefix / "lib" / "big.so", "binary")
    _write_big(prefix / "lib" / "big.txt", "text")
    (prefix / RELOCATIONS_FILE).parent.mkdir(parents=True)
    records = [["lib/big.so", PLACEHOLDER.decode(), "binary"], ["lib/big.txt", PLACEHOLDER.decode(), "text"]]
    (prefix / RELOCATIONS_FILE).write_text(json.dumps({"prefixes": records}))
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from podenv.relocate import relocate
        print(relocate(Path({str(prefix)!r}), "/new/place"))
        # VmHWM is this process's own peak; ru_maxrss would carry the parent's across fork+exec.
        status = Path("/proc/self/status").read_text().splitlines()
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    changed, peak_kib = result.stdout.split()
    assert changed == "2"
    # Two files of 256 MiB each: whole, they would take over 1 GiB (each read and its copy).
    assert int(peak_kib) < 128 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
    binary = (prefix / "lib" / "big.so").read_bytes()
    assert len(binary) == SIZE + 4 * len(PLACEHOLDER + b"/lib\0") and PLACEHOLDER not in binary
    assert binary.count(b"/new/place/lib\0") == 4
    text = (prefix / "lib" / "big.txt").read_bytes()
    assert PLACEHOLDER not in text and text.count(b"/new/place/bin\n") == 4
