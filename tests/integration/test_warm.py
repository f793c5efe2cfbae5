"""`podenv warm` with SeaweedFS standing in for two RunPod datacenters: each volume is a bucket
written through the S3 API (as RunPod's volume API is) and read by workers as files through
`weed mount -filer.path=/buckets/<volume>` (as /runpod-volume is). Workers then boot from those
volumes without touching the store; a re-run uploads nothing; a blob cut short is not used; a
package-sharded env layer is warmed with every one of its shards and its index."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from devkit.netvolume import fuse_available
from devkit.seaweed import FilerMount, SeaweedServer
from podenv.runpod.warm import blob_key, manifest_key
from podenv.shards import INDEX_FILE, layer_blobs, parse_index
from tests.integration.boot_support import (
    PODENV,
    LayerSource,
    Published,
    boot_argv,
    clean_environment,
    closed_port,
    publish_release,
    publish_sharded_release,
    reports,
    run,
    write_small_env,
    write_tiny_model,
)

_NO_FUSE = fuse_available()
pytestmark = pytest.mark.skipif(_NO_FUSE is not None, reason=_NO_FUSE or "")
DATACENTERS = ("EU-RO-1", "US-KS-2")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    work = tmp_path_factory.mktemp("warm")
    store = f"s3://{seaweed.bucket}/warm-{uuid.uuid4().hex[:12]}"
    layers = [
        LayerSource("env", write_small_env(work / "env", "w1", files=50)),
        LayerSource("tiny", write_tiny_model(work / "model"), "model", "hf-hub"),
    ]
    return publish_release(store, "warmenv", "w1", layers, work)


@pytest.fixture
def volumes(seaweed: SeaweedServer, tmp_path: Path) -> Iterator[dict[str, tuple[str, Path]]]:
    """Per datacenter: a volume id (a bucket) and that volume mounted as a worker sees it."""
    client = boto3.client("s3", endpoint_url=seaweed.endpoint, **_credentials(seaweed))
    mounts, found = [], {}
    try:
        for datacenter in DATACENTERS:
            volume_id = f"vol-{datacenter.lower()}-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=volume_id)
            mount = FilerMount(seaweed, tmp_path / datacenter, f"/buckets/{volume_id}").start()
            mounts.append(mount)
            found[datacenter] = (volume_id, mount.mountpoint)
        yield found
    finally:
        for mount in mounts:
            mount.stop()


def _credentials(seaweed: SeaweedServer) -> dict[str, str]:
    return {"aws_access_key_id": seaweed.access_key, "aws_secret_access_key": seaweed.secret_key}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer, s3env) -> Published:
    """A release whose env layer is package-sharded: bin/ one package, the data another."""
    work = tmp_path_factory.mktemp("warm-sharded")
    store = f"s3://{seaweed.bucket}/warm-sharded-{uuid.uuid4().hex[:12]}"
    tree = write_small_env(work / "env", "s1", files=30)
    return publish_sharded_release(store, "shardenv", "s1", tree, lambda name: name.split("/")[0], work)


def _deploy_file(
    tmp_path: Path, volumes: dict[str, tuple[str, Path]], store: str, env: str = "warmenv"
) -> Path:
    document = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "tts.yaml").read_text())
    document.update(env=env, endpoint=f"podenv-{env}", store=store)
    document["volumes"] = [{"datacenter": dc, "id": volume_id} for dc, (volume_id, _) in volumes.items()]
    path = tmp_path / f"{env}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _warm(seaweed: SeaweedServer, s3env, deploy_file: Path, version: str):
    endpoints = [f"--s3-endpoint={dc}={seaweed.endpoint}" for dc in DATACENTERS]
    environment = clean_environment(
        {**s3env, "RUNPOD_S3_ACCESS_KEY": seaweed.access_key, "RUNPOD_S3_SECRET_KEY": seaweed.secret_key}
    )
    return run([*PODENV, "warm", version, "--volumes", str(deploy_file), *endpoints], environment)


def test_warmed_volumes_boot_workers_without_the_store(
    release: Published, volumes, seaweed: SeaweedServer, s3env, tmp_path: Path
) -> None:
    deploy_file = _deploy_file(tmp_path, volumes, release.store)

    result = _warm(seaweed, s3env, deploy_file, release.version)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("2 blobs uploaded and verified, 0 already there") == 2
    for _, mountpoint in volumes.values():
        for layer in release.manifest.layers:
            blob = mountpoint / blob_key(layer.digest)
            assert blob.stat().st_size == layer.size
            assert blob.read_bytes() == release.archives[layer.name].read_bytes()
        manifest = mountpoint / manifest_key(release.name, release.version)
        assert manifest.read_bytes() == release.manifest.canonical_bytes()

    again = _warm(seaweed, s3env, deploy_file, release.version)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("0 blobs uploaded and verified, 2 already there") == 2

    # A worker in each datacenter, pinned as `podenv deploy` pins it, with the store unreachable.
    unreachable = clean_environment(
        {**s3env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_MAX_ATTEMPTS": "1"}
    )
    pins = ["--version", release.version, "--digest", release.digest]
    for _, mountpoint in volumes.values():
        root = mountpoint / "podenv"
        argv = boot_argv(root, release.name, release.store, pins, ["hello"])
        booted = run(argv, unreachable)
        assert booted.returncode == 0, booted.stderr[-2000:]
        (report,) = reports(root)
        assert set(report["layers"].values()) == {"blob-cache"}
        assert report["bytes_fetched"] == 0


def test_a_sharded_layer_goes_in_with_every_shard_and_its_index(
    sharded: Published, volumes, seaweed: SeaweedServer, s3env, tmp_path: Path
) -> None:
    (layer,) = sharded.manifest.layers
    assert layer.sharded
    built = sharded.archives["env"]
    blobs = layer_blobs(built, parse_index((built / INDEX_FILE).read_bytes(), layer.digest))
    assert len(blobs) >= 3  # two packages' shards and the index
    deploy_file = _deploy_file(tmp_path, volumes, sharded.store, env="shardenv")

    result = _warm(seaweed, s3env, deploy_file, sharded.version)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count(f"{len(blobs)} blobs uploaded and verified, 0 already there") == 2
    for _, mountpoint in volumes.values():
        for digest, path in blobs.items():
            assert (mountpoint / blob_key(digest)).read_bytes() == path.read_bytes()

    unreachable = clean_environment(
        {**s3env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_MAX_ATTEMPTS": "1"}
    )
    pins = ["--version", sharded.version, "--digest", sharded.digest]
    for _, mountpoint in volumes.values():
        root = mountpoint / "podenv"
        booted = run(boot_argv(root, sharded.name, sharded.store, pins, ["hello"]), unreachable)
        assert booted.returncode == 0, booted.stderr[-2000:]
        (report,) = reports(root)
        assert report["layers"] == {"env": "blob-cache"} and report["bytes_fetched"] == 0


def test_a_blob_cut_short_on_the_volume_is_not_used(
    release: Published, volumes, seaweed: SeaweedServer, s3env, tmp_path: Path
) -> None:
    volume_id, mountpoint = volumes[DATACENTERS[0]]
    client = boto3.client("s3", endpoint_url=seaweed.endpoint, **_credentials(seaweed))
    env_layer = release.manifest.layers[0]
    whole = release.archives[env_layer.name].read_bytes()
    client.put_object(Bucket=volume_id, Key=blob_key(env_layer.digest), Body=whole[: len(whole) // 2])
    client.put_object(
        Bucket=volume_id,
        Key=manifest_key(release.name, release.version),
        Body=release.manifest.canonical_bytes(),
    )

    pins = ["--version", release.version, "--digest", release.digest]
    root = mountpoint / "podenv"
    booted = run(boot_argv(root, release.name, release.store, pins), clean_environment(s3env))

    assert booted.returncode == 0, booted.stderr[-2000:]
    (report,) = reports(root)
    assert report["layers"][env_layer.name] != "blob-cache", "half a blob is never used"
    assert report["bytes_fetched"] >= env_layer.size


def test_a_manifest_on_the_volume_with_other_bytes_is_not_trusted(
    release: Published, volumes, seaweed: SeaweedServer, s3env
) -> None:
    volume_id, mountpoint = volumes[DATACENTERS[1]]
    client = boto3.client("s3", endpoint_url=seaweed.endpoint, **_credentials(seaweed))
    forged = dict(release.manifest.document, created="2030-01-01T00:00:00Z")
    client.put_object(
        Bucket=volume_id, Key=manifest_key(release.name, release.version), Body=json.dumps(forged).encode()
    )
    unreachable = clean_environment({**s3env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"})
    pins = ["--version", release.version, "--digest", release.digest]

    booted = run(boot_argv(mountpoint / "podenv", release.name, release.store, pins), unreachable)

    assert booted.returncode != 0, "the forged manifest was used"
    assert "store" in booted.stderr.strip().splitlines()[-1]


def test_promote_warms_first_and_moves_nothing_when_warming_fails(
    release: Published, volumes, seaweed: SeaweedServer, s3env, tmp_path: Path
) -> None:
    deploy_file = _deploy_file(tmp_path, volumes, release.store)
    endpoints = [f"--s3-endpoint={dc}={seaweed.endpoint}" for dc in DATACENTERS]
    promote = [
        *PODENV,
        "promote",
        release.name,
        release.version,
        "--channel",
        "canary",
        "--store",
        release.store,
    ]
    wrong = clean_environment({**s3env, "RUNPOD_S3_ACCESS_KEY": "nobody", "RUNPOD_S3_SECRET_KEY": "wrong"})

    refused = run([*promote, "--warm", str(deploy_file), *endpoints], wrong)

    assert refused.returncode == 12
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("podenv: error: RunPod's volume API in EU-RO-1 refused volume ")
    history = run([*PODENV, "history", release.name, "--channel", "canary", "--store", release.store], wrong)
    assert history.returncode == 4, "the channel was not moved"

    right = clean_environment(
        {**s3env, "RUNPOD_S3_ACCESS_KEY": seaweed.access_key, "RUNPOD_S3_SECRET_KEY": seaweed.secret_key}
    )
    moved = run([*promote, "--warm", str(deploy_file), *endpoints], right)

    assert moved.returncode == 0, moved.stderr[-2000:]
    assert moved.stdout.strip().startswith(f"canary: nothing -> {release.version}")
    for _, mountpoint in volumes.values():
        assert (mountpoint / manifest_key(release.name, release.version)).is_file()
