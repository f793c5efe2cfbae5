"""The podenv command as a user runs it: a real process, real files, the real S3 server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.manifests import example_manifest
from tests.reference import REFERENCE_LOCK


def podenv(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podenv.cli", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "lib").mkdir()
    (root / "lib" / "data.bin").write_bytes(os.urandom(100_000))
    (root / "lib" / "alias").symlink_to("data.bin")
    return root


def test_help_lists_the_commands() -> None:
    result = podenv("--help")
    assert result.returncode == 0
    for command in ("pack", "unpack", "blob", "manifest"):
        assert f"    {command} " in result.stdout


def test_pack_then_unpack(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "layer.tar.zst"
    packed = podenv("pack", str(tree), str(archive))
    assert packed.returncode == 0, packed.stderr
    digest = packed.stdout.strip()
    assert digest.startswith("sha256:")
    assert "packed" in packed.stderr and "3 files" in packed.stderr

    target = tmp_path / "out"
    unpacked = podenv("--log-format", "json", "unpack", str(archive), str(target), "--digest", digest)

    assert unpacked.returncode == 0, unpacked.stderr
    summary = json.loads(unpacked.stderr.strip().splitlines()[-1])
    assert summary["digest"] == digest and summary["files"] == 3
    assert (target / "lib" / "data.bin").read_bytes() == (tree / "lib" / "data.bin").read_bytes()
    assert os.access(target / "bin" / "tool", os.X_OK)


def test_unpack_with_wrong_digest_fails_and_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "layer.tar.zst"
    podenv("pack", str(tree), str(archive))
    target = tmp_path / "out"

    result = podenv("unpack", str(archive), str(target), "--digest", "sha256:" + "0" * 64)

    assert result.returncode == 7
    assert result.stderr.startswith("podenv: error: archive")
    assert "is corrupt: expected sha256:000" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_unpack_refuses_an_existing_target(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "layer.tar.zst"
    podenv("pack", str(tree), str(archive))
    result = podenv("unpack", str(archive), str(tree))
    assert result.returncode == 1
    assert "exists already" in result.stderr


def test_blob_put_and_get_through_s3(tree: Path, tmp_path: Path, s3_environment: dict[str, str]) -> None:
    archive = tmp_path / "layer.tar.zst"
    podenv("pack", str(tree), str(archive))
    store = "s3://podenv/cli-test"

    first = podenv("blob", "put", str(archive), "--store", store)
    second = podenv("blob", "put", str(archive), env={"PODENV_STORE": store})
    fetched = podenv("blob", "get", first.stdout.strip(), str(tmp_path / "copy"), "--store", store)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "uploaded sha256:" in first.stderr
    assert "nothing uploaded" in second.stderr
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "copy").read_bytes() == archive.read_bytes()
    assert s3_environment["AWS_SECRET_ACCESS_KEY"] not in first.stderr + second.stderr + fetched.stderr


def test_blob_commands_need_a_store(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PODENV_STORE"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "podenv.cli",
            "blob",
            "get",
            "sha256:" + "0" * 64,
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "pass --store URL or set PODENV_STORE" in result.stderr


def test_manifest_command(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(example_manifest()))
    bad_document = example_manifest()
    bad_document["layers"][0]["digest"] = "nope"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_document))

    ok = podenv("manifest", str(good))
    refused = podenv("manifest", str(bad))

    assert ok.returncode == 0 and ok.stdout.startswith("tts 1.0.0 sha256:")
    assert refused.returncode == 9
    assert "release manifest is invalid at $.layers[0].digest" in refused.stderr


@pytest.mark.contract
def test_plan_prints_every_package_and_flags_sdists() -> None:
    result = podenv("plan", str(REFERENCE_LOCK), "--env", "default", "--platform", "linux-64")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("conda ") for line in lines) == 41
    assert sum(line.startswith("pypi ") for line in lines) == 89
    assert sum(line.endswith(" SDIST") for line in lines) == 5
    assert lines[-1].startswith("# 41 conda and 89 PyPI packages; 5 flagged")


@pytest.mark.contract
def test_plan_json_and_refusal() -> None:
    as_json = podenv("plan", str(REFERENCE_LOCK), "--env", "default", "--json")
    missing = podenv("plan", str(REFERENCE_LOCK), "--env", "tts")

    assert json.loads(as_json.stdout)["lock_version"] == 6
    assert missing.returncode == 1
    assert "has no environment 'tts'" in missing.stderr


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--env", "../etc", "is not a valid env name"),
        ("--channel", "a/b", "is not a valid channel"),
        ("--version", "../1", "is not a valid version"),
        ("--digest", "sha256:nothex", "is not a digest"),
    ],
)
def test_boot_refuses_names_that_would_leave_the_volume(
    tmp_path: Path, option: str, value: str, complaint: str
) -> None:
    root = tmp_path / "volume"
    arguments = ["boot", "--store", f"file://{tmp_path}", "--env", "tts", "--root", str(root), option, value]

    result = podenv(*arguments)

    assert result.returncode != 0
    assert complaint in result.stderr
    assert not root.exists()


def test_release_commands(tmp_path: Path) -> None:
    from podenv.manifest import Manifest
    from podenv.store import open_store

    store_url = f"file://{tmp_path}"
    store = open_store(store_url)
    for version, six in (("1.0.0", "1.16.0"), ("1.1.0", "1.17.0")):
        document = example_manifest()
        document["version"] = version
        document["sbom"]["pypi"] = [{"name": "six", "version": six}]
        store.put_release("tts", version, Manifest.from_document(document).canonical_bytes())

    promoted = [
        podenv("promote", "tts", v, "--channel", "stable", "--store", store_url) for v in ("1.0.0", "1.1.0")
    ]
    table = podenv("releases", "tts", "--store", store_url)
    shown = podenv("show", "tts", "1.1.0", "--store", store_url)
    difference = podenv("diff", "tts", "1.0.0", "1.1.0", "--store", store_url)
    rolled = podenv("rollback", "tts", "--channel", "stable", "--store", store_url)
    moves = podenv("history", "tts", "--channel", "stable", "--store", store_url)
    refused = podenv("rollback", "tts", "--channel", "stable", "--to", "7.0.0", "--store", store_url)

    assert [p.stdout.split(":")[1].split("(")[0].strip() for p in promoted] == [
        "nothing -> 1.0.0",
        "1.0.0 -> 1.1.0",
    ]
    assert table.stdout.splitlines()[2].split()[0] == "1.1.0" and table.stdout.splitlines()[2].endswith(
        "stable"
    )
    assert "CUDA 12.4" in shown.stdout and "f5-tts" in shown.stdout
    assert "~ pypi:six 1.16.0 -> 1.17.0" in difference.stdout
    assert rolled.stdout.startswith("stable: 1.1.0 -> 1.0.0")
    assert [line.split()[2:5] for line in moves.stdout.splitlines()] == [
        ["-", "->", "1.0.0"],
        ["1.0.0", "->", "1.1.0"],
        ["1.1.0", "->", "1.0.0"],
    ]
    assert refused.returncode == 4 and "rollback of stable refused" in refused.stderr
