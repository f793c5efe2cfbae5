"""The local conda channel, checked with the real tools: rattler indexes, locks and installs
it offline, uv installs a wheel beside it, conda-pack packs and relocates the result."""

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import conda_pack
import pytest
import rattler
from conda_package_handling.api import extract
from rattler import LockChannel, LockFile, LockPlatform

from devkit.localchannel import (
    PREFIX_PLACEHOLDER,
    PYTHON_PREFIX_FILE,
    ZIP_EPOCH,
    CondaPackageSpec,
    Symlink,
    build_channel,
    build_package,
    file_sha256,
    locked_records,
    module_package_spec,
    relocatable_python_spec,
)

MODULE_SOURCE = 'GREETING = "hello from a conda package"\n'
WHEEL_NAME = "greet_wheel"


@dataclass
class Channel:
    root: Path
    url: str


@dataclass
class Installed:
    prefix: Path
    cache: Path


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Channel:
    root = tmp_path_factory.mktemp("channel")
    specs = [relocatable_python_spec(), module_package_spec("condamod", "1.0", MODULE_SOURCE)]
    return Channel(root, build_channel(root, specs))


@pytest.fixture(scope="module")
def lock_path(channel: Channel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixi.lock holding the channel's records, as podenv will read one."""
    lock = LockFile([LockPlatform("linux-64")])
    lock.set_channels("default", [LockChannel(channel.url)])
    for record in locked_records(channel.root, ["python", "condamod"]):
        lock.add_conda_package("default", LockPlatform("linux-64"), record)
    path = tmp_path_factory.mktemp("lock") / "pixi.lock"
    lock.to_path(path)
    return path


def _records_from_lock(lock_path: Path) -> list[rattler.RepoDataRecord]:
    lock = LockFile.from_path(lock_path)
    # A platform made apart from the lock makes rattler panic here: take the lock's own.
    records = lock.default_environment().conda_repodata_records_for_platform(lock.platforms()[0])
    assert records is not None
    return records


@pytest.fixture(scope="module")
def installed(lock_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    prefix, cache = root / "prefix", root / "cache"
    asyncio.run(
        rattler.install(
            _records_from_lock(lock_path),
            target_prefix=prefix,
            cache_dir=cache,
            execute_link_scripts=False,
            show_progress=False,
        )
    )
    return Installed(prefix, cache)


def _uv() -> list[str]:
    # `uv run` names itself in UV; otherwise the uv pinned in the build extra, beside this interpreter.
    if os.environ.get("UV"):
        return [os.environ["UV"]]
    return [sys.executable, "-m", "uv"]


def _build_wheel(directory: Path) -> Path:
    """A minimal pure wheel with a module and a console script."""
    dist_info = f"{WHEEL_NAME}-1.0.dist-info"
    members = {
        f"{WHEEL_NAME}.py": b"def main():\n    print('greet from the wheel')\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {WHEEL_NAME}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": f"[console_scripts]\ngreet = {WHEEL_NAME}:main\n".encode(),
    }
    record = "".join(f"{name},sha256={_record_digest(data)},{len(data)}\n" for name, data in members.items())
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = directory / f"{WHEEL_NAME}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
    return path


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _uv_install(prefix: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    command = [*_uv(), "pip", "install", "--python", str(prefix / "bin/python"), "--no-deps"]
    return subprocess.run(
        [*command, "--offline", "--no-cache", str(wheel)], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def with_wheel(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The installed prefix, plus a wheel that uv put in Debian's local dist-packages."""
    wheel = _build_wheel(tmp_path_factory.mktemp("wheel"))
    result = _uv_install(installed.prefix, wheel)
    assert result.returncode == 0, result.stderr
    return installed


def _python(prefix: Path, code: str) -> str:
    result = subprocess.run(
        [str(prefix / "bin/python"), "-c", code], capture_output=True, text=True, check=True, env={}
    )
    return result.stdout.strip()


def test_repodata_lists_each_package_with_the_digest_of_its_file(channel: Channel) -> None:
    repodata = json.loads((channel.root / "linux-64/repodata.json").read_text())
    packages = repodata["packages.conda"]

    assert sorted(packages) == ["condamod-1.0-0.conda", "python-3.11.2-debian_0.conda"]
    for filename, record in packages.items():
        on_disk = channel.root / "linux-64" / filename
        assert record["sha256"] == file_sha256(on_disk)
        assert record["size"] == on_disk.stat().st_size
    assert packages["condamod-1.0-0.conda"]["depends"] == ["python 3.11.*"]
    assert json.loads((channel.root / "noarch/repodata.json").read_text())["packages.conda"] == {}


def test_locked_records_survive_a_lock_file_round_trip(channel: Channel, lock_path: Path) -> None:
    records = {r.name.normalized: r for r in _records_from_lock(lock_path)}

    python = records["python"]
    assert python.url == f"{channel.url}/linux-64/python-3.11.2-debian_0.conda"
    assert python.sha256.hex() == file_sha256(channel.root / "linux-64" / python.file_name)
    assert python.md5 is not None
    assert records["condamod"].depends == ["python 3.11.*"]


def test_locked_records_refuse_a_name_the_channel_lacks(channel: Channel) -> None:
    with pytest.raises(ValueError, match="numpy"):
        locked_records(channel.root, ["numpy"])


def test_rattler_installs_offline_and_the_prefix_python_imports_the_module(installed: Installed) -> None:
    out = _python(installed.prefix, "import condamod, sys; print(condamod.GREETING); print(sys.prefix)")

    assert out.splitlines() == ["hello from a conda package", str(installed.prefix)]


def test_rattler_replaces_the_placeholder_with_the_prefix(installed: Installed) -> None:
    prefix_file = (installed.prefix / PYTHON_PREFIX_FILE).read_text()
    script = (installed.prefix / "bin/pydoc3.11").read_text()

    assert prefix_file == f"prefix={installed.prefix}\n"
    assert script.startswith(f"#!{installed.prefix}/bin/python3.11\n")
    assert (installed.prefix / "bin/python3").readlink() == Path("python3.11")


def test_conda_meta_points_at_the_package_cache_conda_pack_reads(installed: Installed) -> None:
    meta = json.loads((installed.prefix / "conda-meta/python-3.11.2-debian_0.json").read_text())
    cached = Path(meta["link"]["source"])

    assert cached == installed.cache / "python-3.11.2-debian_0"
    assert meta["extracted_package_dir"] == str(cached)
    paths = json.loads((cached / "info/paths.json").read_text())["paths"]
    prefix_entry = next(p for p in paths if p["_path"] == PYTHON_PREFIX_FILE)
    assert prefix_entry["prefix_placeholder"] == PREFIX_PLACEHOLDER
    assert prefix_entry["file_mode"] == "text"
    # The cache keeps the placeholder: conda-pack packs from there, not from the prefix.
    assert PREFIX_PLACEHOLDER in (cached / PYTHON_PREFIX_FILE).read_text()


def test_uv_installs_into_debian_local_dist_packages(with_wheel: Installed) -> None:
    site = with_wheel.prefix / "local/lib/python3.11/dist-packages"

    assert (site / f"{WHEEL_NAME}.py").is_file()
    assert _python(with_wheel.prefix, f"import {WHEEL_NAME}; print({WHEEL_NAME}.__file__)") == str(
        site / f"{WHEEL_NAME}.py"
    )
    assert (with_wheel.prefix / "local/bin/greet").is_file()


def test_uv_refuses_the_prefix_when_the_stdlib_is_marked_externally_managed(
    installed: Installed, tmp_path: Path
) -> None:
    marker = installed.prefix / "lib/python3.11/EXTERNALLY-MANAGED"
    shutil.copyfile("/usr/lib/python3.11/EXTERNALLY-MANAGED", marker)
    try:
        result = _uv_install(installed.prefix, _build_wheel(tmp_path))
    finally:
        marker.unlink()

    assert result.returncode != 0
    assert "externally managed" in result.stderr


def test_conda_pack_packs_the_prefix_and_conda_unpack_relocates_it(
    with_wheel: Installed, tmp_path: Path
) -> None:
    env = conda_pack.CondaEnv.from_prefix(str(with_wheel.prefix))
    archive = tmp_path / "env.tar.gz"
    env.pack(output=str(archive), format="tar.gz")
    target = tmp_path / "moved"
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="tar")
    # Packed straight from the cache, the prefix file still holds the placeholder.
    assert PREFIX_PLACEHOLDER in (target / PYTHON_PREFIX_FILE).read_text()

    subprocess.run([str(target / "bin/python"), str(target / "bin/conda-unpack")], check=True)

    assert (target / PYTHON_PREFIX_FILE).read_text() == f"prefix={target}\n"
    # conda-pack turns a #! into the prefix's python into /usr/bin/env instead.
    assert (target / "bin/pydoc3.11").read_text().startswith("#!/usr/bin/env python3.11\n")
    code = f"import condamod, {WHEEL_NAME}, sys; print(condamod.GREETING); print(sys.prefix)"
    assert _python(target, code).splitlines() == ["hello from a conda package", str(target)]
    # uv's script is unmanaged: conda-unpack rewrote its #! to the new prefix.
    greet = subprocess.run([str(target / "local/bin/greet")], capture_output=True, text=True, check=True)
    assert greet.stdout == "greet from the wheel\n"


def test_the_same_spec_gives_the_same_bytes(channel: Channel, tmp_path: Path) -> None:
    python = build_package(relocatable_python_spec(), tmp_path / "again")

    assert file_sha256(python) == file_sha256(channel.root / "linux-64" / python.name)
    with zipfile.ZipFile(python) as outer:
        assert {member.date_time for member in outer.infolist()} == {ZIP_EPOCH}


def test_a_spec_with_links_and_executables_builds_as_declared(tmp_path: Path) -> None:
    spec = CondaPackageSpec(
        name="tool",
        version="2.0",
        subdir="noarch",
        files={"bin/tool": b"#!/bin/sh\necho tool\n", "bin/tool-link": Symlink("tool"), "share/x": b"x"},
        executables=frozenset({"bin/tool"}),
    )
    built = build_package(spec, tmp_path / "channel")
    extract(str(built), dest_dir=str(tmp_path / "out"))
    out = tmp_path / "out"

    assert built == tmp_path / "channel/noarch/tool-2.0-0.conda"
    assert (out / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (out / "share/x").stat().st_mode & 0o777 == 0o644
    assert (out / "bin/tool-link").readlink() == Path("tool")
    index = json.loads((out / "info/index.json").read_text())
    assert (index["subdir"], index["noarch"]) == ("noarch", "generic")
    paths = {p["_path"]: p for p in json.loads((out / "info/paths.json").read_text())["paths"]}
    assert paths["bin/tool-link"]["path_type"] == "softlink"
    assert paths["bin/tool"]["sha256"] == file_sha256(out / "bin/tool")
    assert (out / "info/files").read_text().split() == ["bin/tool", "bin/tool-link", "share/x"]


def test_a_prefix_file_without_the_placeholder_is_refused(tmp_path: Path) -> None:
    spec = CondaPackageSpec(
        name="bad", version="1", files={"etc/x": b"no prefix"}, has_prefix_text=frozenset({"etc/x"})
    )

    with pytest.raises(ValueError, match="does not contain it"):
        build_package(spec, tmp_path)
