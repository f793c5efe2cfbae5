"""Golden digests: a fixed tree packed by the writer gives committed bytes.

The determinism tests elsewhere compare two packs within one run; this one compares against
a digest committed in tests/data/golden-digests.json, so an upgrade of zstandard, of Python's
tarfile or a change to the writer that alters the bytes fails here, before it ships.

To accept a deliberate change: ``python -m tests.functional.test_golden_digests --accept``
(rewrites the JSON) and say in the commit why every layer's digest changes.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import zstandard

from podenv.archive import pack_tree

GOLDEN = Path(__file__).parents[1] / "data" / "golden-digests.json"
WHAT_IT_MEANS = (
    "the writer packed the fixed tree into different bytes than the committed golden digest. "
    "Every layer's digest changes with it: the next build re-uploads every layer of every env, "
    "and every worker volume downloads them again. {which} If the change is deliberate (an "
    "upgrade of zstandard or Python, or a writer change), accept it with "
    "`python -m tests.functional.test_golden_digests --accept` and say so in the commit message."
)


def _noise(size: int, seed: bytes) -> bytes:
    """Incompressible but reproducible bytes."""
    blocks = (hashlib.sha256(seed + index.to_bytes(4, "big")).digest() for index in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def write_golden_tree(root: Path) -> Path:
    """The fixed tree: what layers hold (text, binary, an executable, links, odd names), with
    modes and mtimes the writer must normalise."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.11").mkdir(parents=True)
    (root / "share" / "empty").mkdir(parents=True)
    (root / "unicode").mkdir()
    tool = root / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho golden\n")
    tool.chmod(0o700)
    (root / "lib" / "python3.11" / "module.py").write_text("VALUE = 1\n" * 2000)
    (root / "lib" / "weights.bin").write_bytes(_noise(96 * 1024, b"podenv-golden"))
    (root / "lib" / "empty").write_bytes(b"")
    (root / "lib" / "private.txt").write_text("mode 600\n")
    (root / "lib" / "private.txt").chmod(0o600)
    os.link(root / "lib" / "weights.bin", root / "lib" / "weights-hardlink.bin")
    (root / "lib" / "module-link.py").symlink_to("python3.11/module.py")
    (root / "unicode" / "naïve-файл.txt").write_text("unicode name\n")
    for index, path in enumerate(sorted(root.rglob("*"))):
        if not path.is_symlink():
            os.utime(path, (1_000_000 + index, 2_000_000_000 - index))
    return root


def pack_golden(work: Path, threads: int) -> dict[str, str]:
    tree = write_golden_tree(work / "tree")
    archive = work / "golden.tar.zst"
    info = pack_tree(tree, archive, threads=threads)
    tar = zstandard.ZstdDecompressor().decompressobj().decompress(archive.read_bytes())
    return {"archive": info.digest, "tar": "sha256:" + hashlib.sha256(tar).hexdigest()}


@pytest.mark.parametrize("threads", [1, 4])
def test_the_writer_gives_the_golden_bytes(tmp_path: Path, threads: int) -> None:
    golden = json.loads(GOLDEN.read_text())
    actual = pack_golden(tmp_path, threads)
    if actual["tar"] != golden["tar"]:
        which = "The tar stream itself changed (Python's tarfile or the writer's entries)."
    else:
        which = "The tar stream is the same; only the compression changed (zstandard or the level)."
    assert actual == {"archive": golden["archive"], "tar": golden["tar"]}, WHAT_IT_MEANS.format(which=which)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--accept"]:
        sys.exit("usage: python -m tests.functional.test_golden_digests --accept")
    with tempfile.TemporaryDirectory() as work:
        digests = pack_golden(Path(work), threads=0)
    note = "Digests of the fixed tree in tests/functional/test_golden_digests.py; see its docstring."
    GOLDEN.write_text(json.dumps({"note": note, **digests}, indent=1) + "\n")
    print(f"accepted: {digests}")
