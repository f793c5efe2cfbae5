"""`podenv doctor` as a real process against the real S3 server and a real volume directory:
a good setup passes every check, and each failure it knows is reported on its own line
with a fix, no secret anywhere."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from devkit.seaweed import SeaweedServer
from podenv.doctor import NEEDED_BY, Probe, judge_semantics, probe_semantics
from podenv.gpu import driver_cuda_version
from podenv.manifest import Manifest
from podenv.store import open_store
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    clean_environment,
    closed_port,
    publish_release,
    write_small_env,
    write_tiny_model,
)

CHECKS = ["store", "release", "volume", "space", "semantics", "driver", "placement"]
CUDA_VERSION = "2-cuda"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    """Release `doc` 1 (no CUDA) on channel stable, and `doc` 2-cuda (same layers, needs CUDA 12.4)."""
    work = tmp_path_factory.mktemp("doctor")
    store_url = f"s3://{seaweed.bucket}/doctor-{uuid.uuid4().hex[:12]}"
    layers = [
        LayerSource("env", write_small_env(work / "env", "1")),
        LayerSource("tiny", write_tiny_model(work / "model"), "model", "hf-hub"),
    ]
    published = publish_release(store_url, "doc", "1", layers, work, channel="stable")
    document = {**published.manifest.document, "version": CUDA_VERSION, "cuda": "12.4"}
    open_store(store_url).put_release("doc", CUDA_VERSION, Manifest.from_document(document).canonical_bytes())
    return published


def doctor(
    environment: dict[str, str], *options: str, global_options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    argv = [*PODENV, *global_options, "doctor", *options]
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=120)


def worker_environment(release: Published, s3env: dict[str, str], root: Path, **extra: str) -> dict[str, str]:
    """What a RunPod worker has: the PODENV_* variables and the S3 credentials, nothing else."""
    variables = {"PODENV_STORE": release.store, "PODENV_ENV": "doc", "PODENV_ROOT": str(root)}
    variables["PODENV_LOCAL_ROOT"] = str(root.parent / "local-disk")
    return clean_environment({**s3env, **variables, **extra})


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line, by check name, from `STATUS check: ...`."""
    found = {}
    for line in result.stderr.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP"):
            found[rest.split(":", 1)[0]] = line
    return found


def assert_only_failure(result: subprocess.CompletedProcess[str], check: str, *fragments: str) -> str:
    """``check`` failed (with a fix), naming ``fragments``; no other check failed; exit code 1."""
    assert result.returncode == 1, result.stderr
    by_check = lines(result)
    line = by_check[check]
    assert line.startswith(f"FAIL {check}: ") and " — fix: " in line, line
    for fragment in fragments:
        assert fragment in line, line
    others = [text for name, text in by_check.items() if name != check and text.startswith("FAIL")]
    assert others == [], others
    assert result.stderr.splitlines()[-1].startswith("doctor: ") and " 1 failed" in result.stderr
    return line


def assert_no_secret(result: subprocess.CompletedProcess[str], s3env: dict[str, str], *secrets: str) -> None:
    for secret in (s3env["AWS_SECRET_ACCESS_KEY"], s3env["AWS_ACCESS_KEY_ID"], *secrets):
        assert secret not in result.stdout + result.stderr


def scratch_left(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root) if name.startswith(".podenv-doctor"))


# A good setup


def test_a_good_setup_passes_every_check(release: Published, s3env, tmp_path: Path) -> None:
    root = tmp_path / "volume" / "podenv"

    result = doctor(worker_environment(release, s3env, root))

    assert result.returncode == 0, result.stderr
    by_check = lines(result)
    assert list(by_check) == CHECKS
    assert all(line.startswith("PASS ") for line in by_check.values()), result.stderr
    assert f"{release.store} (endpoint {s3env['AWS_ENDPOINT_URL']}) answered" in by_check["store"]
    assert f"doc 1 (channel stable), {release.digest}, 2 layers" in by_check["release"]
    assert f"{root} is writable (created)" in by_check["volume"]
    assert "needs" in by_check["space"] and "for 2 of 2 layers" in by_check["space"]
    assert "doc 1 needs no CUDA" in by_check["driver"]
    # Both disks are this machine's: the volume is no slower, so the env may stay there.
    assert "creates/s (1 / 16 writers)" in by_check["placement"]
    assert "recommends placement=" in by_check["placement"]
    assert result.stderr.splitlines()[-1] == "doctor: 7 passed, 0 failed"
    assert scratch_left(root) == []
    assert_no_secret(result, s3env)


def test_json_lines_carry_each_check_as_fields(release: Published, s3env, tmp_path: Path) -> None:
    result = doctor(
        worker_environment(release, s3env, tmp_path / "root"), global_options=("--log-format", "json")
    )

    records = [json.loads(line) for line in result.stderr.splitlines()]
    checks = [record["doctor"] for record in records[:-1]]
    assert [check["check"] for check in checks] == CHECKS
    assert {check["status"] for check in checks} == {"pass"}
    assert all(record["msg"].startswith("PASS ") for record in records[:-1])
    assert records[-1]["doctor"] == {"pass": 7, "fail": 0, "skip": 0}


def test_a_warm_volume_needs_no_space(release: Published, s3env, tmp_path: Path) -> None:
    root = tmp_path / "root"
    environment = worker_environment(release, s3env, root)
    booted = subprocess.run([*PODENV, "boot"], capture_output=True, text=True, env=environment, timeout=120)
    assert booted.returncode == 0, booted.stderr

    result = doctor(environment, "--quota", "1")

    assert result.returncode == 0, result.stderr
    assert "PASS space: all 2 layers of doc 1 are on the volume: nothing to fetch" in result.stderr


# The store


def test_a_wrong_secret_is_a_store_failure_without_the_secret(
    release: Published, s3env, tmp_path: Path
) -> None:
    wrong = "wrong-secret-" + uuid.uuid4().hex
    environment = worker_environment(release, s3env, tmp_path / "root", AWS_SECRET_ACCESS_KEY=wrong)

    result = doctor(environment)

    line = assert_only_failure(result, "store", "refused the credentials", "fix: check AWS_ACCESS_KEY_ID")
    assert lines(result)["release"].startswith("SKIP release: the store failed")
    assert_no_secret(result, s3env, wrong)
    assert "\n" not in line


def test_an_unreachable_endpoint_is_a_store_failure(release: Published, s3env, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    environment = worker_environment(release, s3env, tmp_path / "root", AWS_ENDPOINT_URL=endpoint)

    result = doctor(environment)

    assert_only_failure(result, "store", f"cannot reach the store at {release.store} (endpoint {endpoint})")
    assert "fix: check AWS_ENDPOINT_URL and the network" in result.stderr
    assert_no_secret(result, s3env)


def test_a_missing_bucket_is_a_store_failure(release: Published, s3env, tmp_path: Path) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_STORE="s3://no-such-bucket/x")

    result = doctor(environment)

    assert_only_failure(result, "store", "the bucket 'no-such-bucket' does not exist", "fix: create it first")


def test_missing_credentials_are_a_store_failure(release: Published, s3env, tmp_path: Path) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root")
    del environment["AWS_SECRET_ACCESS_KEY"]

    result = doctor(environment)

    assert_only_failure(
        result, "store", "no S3 credentials", "fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def test_a_missing_channel_is_a_release_failure(release: Published, s3env, tmp_path: Path) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_CHANNEL="nightly")

    result = doctor(environment)

    assert_only_failure(result, "release", "channel nightly of doc does not exist", "pin PODENV_VERSION")
    assert lines(result)["store"].startswith("PASS store: ")
    assert "channel nightly of doc is absent" in lines(result)["store"]
    assert lines(result)["space"].startswith("SKIP space: no release resolved")


def test_a_channel_object_that_is_not_a_pointer_is_a_release_failure(
    release: Published, s3env, tmp_path: Path
) -> None:
    open_store(release.store).backend.put_bytes("channels/doc/broken.json", b"not json")
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_CHANNEL="broken")

    result = doctor(environment)

    assert_only_failure(
        result, "release", "channel broken of doc", "is not a channel pointer", "podenv promote"
    )


def test_a_digest_pin_resolves_and_a_wrong_one_is_a_release_failure(
    release: Published, s3env, tmp_path: Path
) -> None:
    pinned = worker_environment(release, s3env, tmp_path / "root", PODENV_DIGEST=release.digest)
    wrong = {**pinned, "PODENV_DIGEST": "sha256:" + "0" * 64}

    good, bad = doctor(pinned), doctor(wrong)

    assert good.returncode == 0, good.stderr
    assert f"PASS release: doc 1 (pinned by digest), {release.digest}" in good.stderr
    assert_only_failure(bad, "release", "no release of doc", "has digest sha256:000", "unset PODENV_DIGEST")


def test_a_missing_version_is_a_release_failure(release: Published, s3env, tmp_path: Path) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_VERSION="9.9")

    result = doctor(environment)

    assert_only_failure(result, "release", "release doc 9.9 does not exist", "fix: list what is published")


# The volume


def test_an_unwritable_volume_is_a_volume_failure(release: Published, s3env, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through any mode bits: a root below a regular file really cannot be made.
        (tmp_path / "volume").write_text("not a directory\n")
        root = tmp_path / "volume" / "podenv"
    else:
        (tmp_path / "volume").mkdir(mode=0o555)
        root = tmp_path / "volume"

    result = doctor(worker_environment(release, s3env, root))

    assert_only_failure(result, "volume", f"cannot write to {root}", "fix: attach the network volume")
    by_check = lines(result)
    assert by_check["space"].startswith("SKIP space: the volume is not usable")
    assert by_check["semantics"].startswith("SKIP semantics: the volume is not usable")
    assert result.stderr.splitlines()[-1] == "doctor: 3 passed, 1 failed, 3 skipped"


def test_not_enough_space_is_a_space_failure(release: Published, s3env, tmp_path: Path) -> None:
    unpacked = sum(layer.unpacked_size for layer in release.manifest.layers)

    result = doctor(worker_environment(release, s3env, tmp_path / "root"), "--quota", str(unpacked))

    assert_only_failure(
        result,
        "space",
        "not enough space on",
        "(+256.0 MiB margin)",
        "fix: grow the volume or run `podenv gc`",
    )


# The driver


def test_a_driver_too_old_for_the_release_is_a_driver_failure(
    release: Published, s3env, tmp_path: Path
) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_VERSION=CUDA_VERSION)

    good = doctor(environment, "--assume-driver-cuda", "12.8")
    old = doctor(environment, "--assume-driver-cuda", "12.2")

    assert good.returncode == 0, good.stderr
    assert (
        f"PASS driver: the driver supports CUDA 12.8 (assumed by --assume-driver-cuda); doc {CUDA_VERSION}"
        in (good.stderr)
    )
    assert_only_failure(
        old,
        "driver",
        f"supports CUDA 12.2, but doc {CUDA_VERSION} needs CUDA 12.4 or later",
        "fix: pick GPUs",
    )


@pytest.mark.skipif(driver_cuda_version() is not None, reason="this machine has an NVIDIA driver")
def test_no_gpu_and_a_release_that_needs_cuda_is_a_driver_failure(
    release: Published, s3env, tmp_path: Path
) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root", PODENV_VERSION=CUDA_VERSION)

    result = doctor(environment)

    assert_only_failure(
        result, "driver", "no NVIDIA driver found", "needs CUDA 12.4", "fix: run on a GPU worker"
    )


def test_without_an_env_doctor_says_what_it_checked(release: Published, s3env, tmp_path: Path) -> None:
    environment = worker_environment(release, s3env, tmp_path / "root")
    del environment["PODENV_ENV"]

    result = doctor(environment)

    assert result.returncode == 0, result.stderr
    by_check = lines(result)
    assert "channel objects listed" in by_check["store"]
    assert by_check["release"].startswith("SKIP release: no env given")
    assert "no release resolved, so no CUDA requirement was checked" in by_check["driver"]


# The volume's file semantics


def test_the_semantics_probes_pass_on_a_local_disk_and_leave_nothing(tmp_path: Path) -> None:
    probes = probe_semantics(tmp_path)

    assert [(probe.name, probe.ok) for probe in probes] == [
        ("O_EXCL", True),
        ("link", True),
        ("flock", True),
        ("rename", True),
        ("symlink", True),
    ]
    assert judge_semantics(probes).status == "pass"
    assert os.listdir(tmp_path) == []


def test_a_directory_the_probes_cannot_use_fails_them_for_real(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a regular file, not a directory\n")

    probes = probe_semantics(tmp_path / "file")
    result = judge_semantics(probes)

    assert [(probe.name, probe.ok) for probe in probes] == [("scratch", False)]
    assert "Not a directory" in probes[0].detail
    assert result.status == "fail" and "put PODENV_ROOT on a POSIX filesystem" in (result.fix or "")


# No filesystem here breaks these behaviours (ext4, tmpfs and overlayfs all keep them), so the
# decision is tested on results as a network filesystem produces them: flock that silently
# succeeds (huggingface_hub PR #4228) and a rename that replaces its target.


def test_flock_that_is_not_enforced_fails_and_says_boot_does_not_need_it() -> None:
    probes = [Probe(name, True, "as POSIX says") for name in ("O_EXCL", "link", "rename", "symlink")]
    probes.insert(2, Probe("flock", False, "a second open file took the exclusive flock the first one held"))

    result = judge_semantics(probes)

    assert result.status == "fail"
    assert result.detail.startswith("flock: a second open file took")
    assert result.fix is not None and result.fix.startswith("boot does not need these")
    assert NEEDED_BY["flock"] in result.fix


def test_a_rename_that_replaces_its_target_fails_naming_what_breaks() -> None:
    probes = [
        Probe("O_EXCL", True, "as POSIX says"),
        Probe("rename", False, "rename(2) replaced a non-empty directory"),
        Probe("symlink", False, "Operation not permitted (EPERM)"),
    ]

    result = judge_semantics(probes)

    assert result.line.startswith(
        "FAIL semantics: rename: rename(2) replaced a non-empty directory; symlink: "
    )
    assert result.fix is not None and "put PODENV_ROOT on a POSIX filesystem" in result.fix
    assert NEEDED_BY["rename"] in result.fix and NEEDED_BY["symlink"] in result.fix
