"""Package-sharded layers: who owns which file, deterministic shards and index, and the process-pool
installer's refusals across shards (through a real file:// store and a real volume directory)."""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podenv.archive import ArchiveEntry, write_archive
from podenv.blobcache import BlobCache
from podenv.boot import BootOptions, BootReport, install_missing
from podenv.digests import digest_hex
from podenv.errors import IntegrityError, PodenvError, UnsafeArchiveError
from podenv.manifest import Layer
from podenv.release import sharded_layer_document
from podenv.shards import (
    SHARD_INDEX_MEDIA_TYPE,
    Shard,
    ShardIndex,
    ShardIndexError,
    cut_package,
    owner_of,
    package_owners,
    parse_index,
    write_sharded_layer,
)
from podenv.store import open_store
from podenv.volume import Volume

# --------------------------------------------------------------------------- a small prefix


def write_prefix(root: Path, greeting: str = "1.0") -> Path:
    """A prefix as a build leaves it: two conda packages with conda-meta records, one wheel with
    its RECORD (a script in bin/ outside site-packages), byte-code, a link, unowned files."""
    site = root / "lib/python3.11/site-packages"
    files = {
        "bin/python3.11": b"\x7fELF python",
        "lib/libpython3.11.so": b"\x7fELF libpython" * 100,
        "lib/python3.11/os.py": b"# os\n",
        "lib/python3.11/__pycache__/os.cpython-311.pyc": b"pyc os",
        "lib/python3.11/site-packages/greeting.py": f"VERSION = '{greeting}'\n".encode(),
        "lib/python3.11/site-packages/__pycache__/greeting.cpython-311.pyc": f"pyc {greeting}".encode(),
        "lib/python3.11/site-packages/six.py": b"# six\n",
        "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc": b"pyc six",
        "lib/python3.11/site-packages/six-1.17.0.dist-info/METADATA": b"Name: six\n",
        "bin/six-tool": b"#!/bin/sh\n",
        "bin/activate": b"# conda-pack's\n",
        "share/empty/.keep": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "bin/python").symlink_to("python3.11")
    (root / "share/nothing").mkdir()
    records = {
        "python-3.11.7-h0_0.json": {
            "name": "python",
            "files": ["bin/python3.11", "bin/python", "lib/libpython3.11.so", "lib/python3.11/os.py"],
        },
        f"greeting-{greeting}-0.json": {
            "name": "greeting",
            "files": ["lib/python3.11/site-packages/greeting.py"],
        },
    }
    (root / "conda-meta").mkdir()
    for name, record in records.items():
        (root / "conda-meta" / name).write_text(json.dumps(record))
    record_rows = ["six.py,sha256=x,6", "six-1.17.0.dist-info/METADATA,,", "six-1.17.0.dist-info/RECORD,,"]
    record_rows.append("../../../bin/six-tool,,")
    (site / "six-1.17.0.dist-info/RECORD").write_text("\n".join(record_rows) + "\n")
    return root


def tree_entries(root: Path) -> list[ArchiveEntry]:
    from podenv.archive import entries_from_tree

    return entries_from_tree(root)


def pack(root: Path, output: Path, limit: int = 64 << 20) -> ShardIndex:
    return write_sharded_layer(tree_entries(root), package_owners(root), output, limit=limit)


def shard_files(output: Path, index: ShardIndex) -> dict[str, list[str]]:
    import tarfile

    import zstandard

    names = {}
    for shard in index.shards:
        with open(output / digest_hex(shard.digest), "rb") as raw:
            stream = zstandard.ZstdDecompressor().stream_reader(raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                names[shard.name] = [member.name for member in tar]
    return names


# --------------------------------------------------------------------------- ownership and cutting


def test_files_go_to_their_package_byte_code_to_its_source_the_rest_to_unowned(tmp_path: Path) -> None:
    prefix = write_prefix(tmp_path / "prefix")
    owners = package_owners(prefix)

    assert owner_of("lib/libpython3.11.so", owners) == "conda-python"
    assert owner_of("lib/python3.11/__pycache__/os.cpython-311.pyc", owners) == "conda-python"
    assert owner_of("lib/python3.11/site-packages/six.py", owners) == "pypi-six"
    assert owner_of("lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc", owners) == "pypi-six"
    assert owner_of("bin/six-tool", owners) == "pypi-six"  # a RECORD path outside site-packages
    assert owner_of("lib/python3.11/site-packages/six-1.17.0.dist-info/RECORD", owners) == "pypi-six"
    assert owner_of("conda-meta/python-3.11.7-h0_0.json", owners) == "unowned"
    assert owner_of("bin/activate", owners) == "unowned"


def test_a_big_package_is_cut_at_whole_files_in_name_order(tmp_path: Path) -> None:
    entries = [
        ArchiveEntry(f"lib/f{index}", "file", data=b"x" * size) for index, size in enumerate([5, 4, 9, 1, 3])
    ]

    parts = cut_package(list(reversed(entries)), limit=9)

    assert [[entry.name for entry in part] for part in parts] == [
        ["lib/f0", "lib/f1"],
        ["lib/f2"],
        ["lib/f3", "lib/f4"],
    ]
    assert cut_package(entries, limit=9) == parts


def test_the_layer_has_one_shard_per_package_and_links_and_directories_only_in_its_index(
    tmp_path: Path,
) -> None:
    prefix = write_prefix(tmp_path / "prefix")
    output = tmp_path / "layer"

    index = pack(prefix, output, limit=1000)

    names = shard_files(output, index)
    python = ["conda-python-part000", "conda-python-part001", "conda-python-part002"]
    assert sorted(names) == ["conda-greeting", *python, "pypi-six", "unowned"]
    # Cut before the file that would take a part past the limit; the big file is a part alone.
    assert [names[part] for part in python] == [
        ["bin/python3.11"],
        ["lib/libpython3.11.so"],
        ["lib/python3.11/__pycache__/os.cpython-311.pyc", "lib/python3.11/os.py"],
    ]
    assert all("bin/python" not in files for files in names.values())  # links live in the index
    assert index.symlinks == (("bin/python", "python3.11"),)
    assert "share/nothing" in index.directories and "lib/python3.11/__pycache__" in index.directories
    assert parse_index((output / "index.json").read_bytes(), index.digest) == index
    assert sorted(path.name for path in output.iterdir()) == sorted(
        [digest_hex(shard.digest) for shard in index.shards] + ["index.json"]
    )


def test_the_same_tree_in_two_places_gives_the_same_shards_and_layer_digest(tmp_path: Path) -> None:
    first = pack(write_prefix(tmp_path / "a" / "prefix"), tmp_path / "a" / "layer")
    second = pack(write_prefix(tmp_path / "somewhere" / "else" / "prefix"), tmp_path / "b" / "layer")

    assert first == second and first.digest == second.digest


def test_a_changed_package_changes_only_its_shard_and_the_unowned_one(tmp_path: Path) -> None:
    old = pack(write_prefix(tmp_path / "a", greeting="1.0"), tmp_path / "layer-a")
    new = pack(write_prefix(tmp_path / "b", greeting="1.1"), tmp_path / "layer-b")

    before = {shard.name: shard.digest for shard in old.shards}
    after = {shard.name: shard.digest for shard in new.shards}
    assert before.keys() == after.keys()
    assert sorted(name for name in before if before[name] != after[name]) == ["conda-greeting", "unowned"]


def test_golden_digest_of_a_fixed_layer(tmp_path: Path) -> None:
    """zstandard, the writer and SHARD_LEVEL are pinned: this layer's identity must not drift silently."""
    entries = [
        ArchiveEntry("bin/tool", "file", data=b"#!/bin/sh\necho hi\n", executable=True),
        ArchiveEntry("lib/data.txt", "file", data=b"data\n" * 100),
        ArchiveEntry("lib/link", "symlink", link_target="data.txt"),
        ArchiveEntry("share", "dir"),
    ]
    owners = {"bin/tool": "conda-tool"}

    index = write_sharded_layer(entries, owners, tmp_path / "layer")

    assert [shard.name for shard in index.shards] == ["conda-tool", "unowned"]
    assert index.digest == GOLDEN_LAYER_DIGEST


GOLDEN_LAYER_DIGEST = "sha256:b03564b7f14d5b27371ec599978272263ebd656034fd3e850308d85b176a1064"


# --------------------------------------------------------------------------- the index is untrusted


def _index_bytes(**changes: Any) -> bytes:
    document = {"media_type": SHARD_INDEX_MEDIA_TYPE, "directories": ["a"], "symlinks": [], "shards": []}
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"directories": ["a", "../x"]},
        {"directories": ["/etc"]},
        {"directories": ["a/b"]},  # no parent
        {"symlinks": [["a", "x"]]},  # a directory and a link
        {"symlinks": [["b/c", "x"]]},  # below nothing
        {"shards": [{"name": "x", "digest": "sha256:12", "size": 1, "unpacked_size": 1, "files": 1}]},
        {"media_type": "something/else"},
    ],
)
def test_an_unsafe_or_malformed_index_is_refused(changes: dict[str, Any]) -> None:
    data = _index_bytes(**changes)
    from podenv.digests import digest_bytes

    with pytest.raises(ShardIndexError):
        parse_index(data, digest_bytes(data))


def test_an_index_that_does_not_hash_to_the_layer_digest_is_refused() -> None:
    with pytest.raises(PodenvError, match=r"expected sha256:0+ but the bytes hash to sha256:"):
        parse_index(_index_bytes(), "sha256:" + "0" * 64)


# --------------------------------------------------------------------------- installing, across shards


@dataclass
class LayerBuilder:
    """Hand-made shards and an index, published to a file:// store, then installed."""

    work: Path
    shards: list[Shard] = field(default_factory=list)
    blobs: dict[str, Path] = field(default_factory=dict)

    def shard(self, name: str, entries: list[ArchiveEntry]) -> Shard:
        path = self.work / f"{name}.tar.zst"
        info = write_archive(entries, path, threads=1)
        shard = Shard(name, info.digest, info.size, info.unpacked_size, info.files)
        self.shards.append(shard)
        self.blobs[info.digest] = path
        return shard

    def publish(self, directories: list[str], symlinks: list[tuple[str, str]] = ()) -> tuple[str, Layer]:
        index = ShardIndex(
            tuple(directories), tuple(symlinks), tuple(sorted(self.shards, key=lambda s: s.name))
        )
        index_path = self.work / "index.json"
        index_path.write_bytes(index.canonical_bytes())
        store_root = self.work / "store"
        store_root.mkdir(exist_ok=True)
        store = open_store(f"file://{store_root}")
        for digest, path in {**self.blobs, index.digest: index_path}.items():
            store.put_blob(path, digest)
        return f"file://{store_root}", Layer.from_document(
            sharded_layer_document(index, "model", "m", "hf-hub")
        )


def install(store_url: str, layer: Layer, root: Path, jobs: int = 2) -> BootReport:
    volume = Volume(root)
    volume.make_dirs()
    report = BootReport(env="m")
    options = BootOptions(root, store_url=store_url, jobs=jobs, writers=4, lease_timeout=30, wait_timeout=30)
    install_missing(open_store(store_url), volume, [layer], options, report)
    return report


def nothing_left(root: Path) -> bool:
    return os.listdir(root / "layers") == [] and os.listdir(root / "staging") == []


def file(name: str, data: bytes = b"data\n") -> ArchiveEntry:
    return ArchiveEntry(name, "file", data=data)


def test_shards_install_into_one_layer_with_the_index_links_and_directories(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt", b"a\n"), file("bin/run", b"#!/bin/sh\n")])
    builder.shard("b", [file("lib/b.txt", b"b\n" * 5000)])
    store_url, layer = builder.publish(["bin", "empty", "lib"], [("lib/current", "a.txt")])

    report = install(store_url, layer, tmp_path / "volume")

    installed = tmp_path / "volume" / "layers" / digest_hex(layer.digest)
    assert (installed / "lib/current").read_text() == "a\n" and os.readlink(
        installed / "lib/current"
    ) == "a.txt"
    assert (installed / "empty").is_dir() and (installed / "lib/b.txt").stat().st_size == 10000
    assert report.layers == {"m": "installed"} and report.files == 4
    assert report.bytes_fetched == layer.size  # every shard and the index, once
    cache = BlobCache(tmp_path / "volume" / "blobs")
    assert all(cache.has(shard.digest, shard.size) for shard in builder.shards) and cache.has(layer.digest)
    assert os.listdir(tmp_path / "volume" / "staging") == []


def test_a_path_in_two_shards_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/same.txt", b"one\n")])
    builder.shard("b", [file("lib/same.txt", b"two\n")])
    store_url, layer = builder.publish(["lib"])

    with pytest.raises(
        UnsafeArchiveError, match=re.escape("'lib/same.txt', which another shard of the layer carries too")
    ):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")


def test_a_link_that_leaves_the_layer_is_refused(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt")])
    store_url, layer = builder.publish(["lib"], [("lib/escape", "../../../../etc/passwd")])

    with pytest.raises(UnsafeArchiveError, match="link 'lib/escape' leaves the layer"):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")


def test_a_link_that_leaves_through_another_link_is_refused(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt")])
    store_url, layer = builder.publish(["lib"], [("lib/d", "."), ("lib/x", "d/../../..")])

    with pytest.raises(UnsafeArchiveError, match="leaves the layer"):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")


def test_a_file_below_a_link_of_the_index_is_refused(tmp_path: Path) -> None:
    """Shard b's file lies below the index's link 'lib': its directory is no directory of the layer."""
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("real/a.txt")])
    builder.shard("b", [file("lib/evil.txt")])
    store_url, layer = builder.publish(["real"], [("lib", "real")])

    with pytest.raises(
        UnsafeArchiveError, match=re.escape("'lib/evil.txt' is not in a directory of the layer's index")
    ):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")
    assert list(tmp_path.glob("**/evil.txt")) == []


def test_a_link_named_like_a_file_of_a_shard_is_refused(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt")])
    store_url, layer = builder.publish(["lib"], [("lib/a.txt", "b.txt")])

    with pytest.raises(UnsafeArchiveError, match=re.escape("link 'lib/a.txt' is also a file of a shard")):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")


@pytest.mark.parametrize(
    "entry",
    [ArchiveEntry("lib/link", "symlink", link_target="a.txt"), ArchiveEntry("lib/sub", "dir")],
    ids=["symlink", "directory"],
)
def test_a_shard_carrying_anything_but_files_is_refused(tmp_path: Path, entry: ArchiveEntry) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt"), entry])
    store_url, layer = builder.publish(["lib"])

    with pytest.raises(UnsafeArchiveError, match="is not a regular file"):
        install(store_url, layer, tmp_path / "volume")

    assert nothing_left(tmp_path / "volume")


def test_a_corrupt_shard_anywhere_fails_the_layer_with_both_digests_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    builder = LayerBuilder(tmp_path)
    for number in range(6):
        builder.shard(
            f"s{number}", [file(f"lib/s{number}/f{index}", os.urandom(3000)) for index in range(50)]
        )
    victim = builder.shards[3]
    store_url, layer = builder.publish(["lib", *[f"lib/s{number}" for number in range(6)]])
    blob = tmp_path / "store" / "blobs" / "sha256" / digest_hex(victim.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    from podenv.digests import digest_bytes

    with pytest.raises(IntegrityError) as refused:
        install(store_url, layer, tmp_path / "volume")

    message = str(refused.value)
    assert "shard s3" in message and victim.digest in message and digest_bytes(bytes(data)) in message
    assert nothing_left(tmp_path / "volume")
    assert not BlobCache(tmp_path / "volume" / "blobs").has(victim.digest)


def test_a_corrupt_index_in_the_store_fails_before_any_shard_and_leaves_nothing(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt")])
    store_url, layer = builder.publish(["lib"])
    blob = tmp_path / "store" / "blobs" / "sha256" / digest_hex(layer.digest)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"lib", b"etc"))  # same size, other bytes
    root = tmp_path / "volume"

    with pytest.raises(IntegrityError, match=f"hashes to .*, not {layer.digest}"):
        install(store_url, layer, root)

    assert nothing_left(root) and os.listdir(root / "leases") == []
    assert os.listdir(root / "blobs") == []  # neither the index nor any shard was cached


def test_a_second_install_from_the_blob_cache_fetches_nothing(tmp_path: Path) -> None:
    builder = LayerBuilder(tmp_path)
    builder.shard("a", [file("lib/a.txt")])
    store_url, layer = builder.publish(["lib"])
    root = tmp_path / "volume"
    install(store_url, layer, root)
    installed = root / "layers" / digest_hex(layer.digest)
    os.rename(installed, root / "gone")

    report = install(store_url, layer, root)

    assert report.layers == {"m": "blob-cache"} and report.bytes_fetched == 0


def test_a_corrupt_cached_shard_is_removed_and_fetched_from_the_store_in_the_same_boot(
    tmp_path: Path,
) -> None:
    builder = LayerBuilder(tmp_path)
    for number in range(4):
        builder.shard(
            f"s{number}", [file(f"lib/s{number}/f{index}", os.urandom(2000)) for index in range(30)]
        )
    store_url, layer = builder.publish(["lib", *[f"lib/s{number}" for number in range(4)]])
    root = tmp_path / "volume"
    install(store_url, layer, root)
    os.rename(root / "layers" / digest_hex(layer.digest), root / "gone")
    victim = builder.shards[2]
    cached = BlobCache(root / "blobs").path(victim.digest)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 1
    cached.write_bytes(bytes(data))

    report = install(store_url, layer, root)

    assert report.layers == {"m": "installed"} and report.bytes_fetched == victim.size
    assert any("cached blob of layer m, shard s2 was corrupt" in warning for warning in report.warnings)
    assert BlobCache(root / "blobs").has(victim.digest, victim.size)  # fetched again, verified
    assert (root / "layers" / digest_hex(layer.digest) / "lib/s2/f0").stat().st_size == 2000


@pytest.mark.parametrize("writers", [0, 16])
def test_directories_are_made_parents_first_by_any_number_of_writers(tmp_path: Path, writers: int) -> None:
    """Siblings are made side by side (one round trip per depth on a volume) or in index order
    by one thread (a local disk); every parent exists before its children either way."""
    from podenv.blobpool import make_directories

    names = sorted(
        {f"lib/p{i}" for i in range(40)}
        | {f"lib/p{i}/sub{j}" for i in range(40) for j in range(5)}
        | {"lib", "bin"}
    )
    index = ShardIndex(tuple(names), (), ())
    make_directories(tmp_path / "layer", index, writers)
    made = sorted(str(path.relative_to(tmp_path / "layer")) for path in (tmp_path / "layer").rglob("*"))
    assert made == names
    with pytest.raises(FileExistsError):  # a staging directory is new: a second pass must not pass
        make_directories(tmp_path / "layer", index, writers)
