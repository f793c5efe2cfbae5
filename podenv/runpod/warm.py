"""`podenv warm`: put a release into every datacenter's network volume before workers need it,
through RunPod's S3-compatible volume API, so that the first worker after a deploy installs
from its own volume instead of waiting (billed) on the store.

RunPod maps ``s3://<volume id>/<path>`` to ``/runpod-volume/<path>`` on a worker, one endpoint
per datacenter (``https://s3api-<datacenter>.runpod.io/``, the datacenter id as region), with
an S3 API key that is not the RunPod API key. What lands, for PODENV_ROOT
``/runpod-volume/podenv``:

    podenv/blobs/<hex>                     every blob of every layer: the volume's blob cache
                                           (a sharded layer's shards, then its index; an
                                           old-format layer's one tar.zst)
    podenv/manifests/<env>/<version>.json  the release manifest, last

A worker pinned by digest (`podenv deploy` pins it) reads that manifest only if its bytes have
the pinned digest, takes a cached blob only at its exact size, and verifies every byte's sha256
as it extracts (a cached blob that fails is removed): an upload cut short is never used. Each
upload is read back and hashed before the next; one already there at its size is kept.

RunPod's documented limits: PutObject under 500 MB, multipart parts of at most 500 MB, slow
CompleteMultipartUpload for large files (read timeout raised), 502s retried (standard mode).
"""

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from podenv.errors import DeployError, IntegrityError
from podenv.log import get_logger
from podenv.manifest import Manifest
from podenv.progress import human_bytes
from podenv.settings import ROOT
from podenv.store import Store

_log = get_logger("warm")
VOLUME_MOUNT = "/runpod-volume"
ENDPOINT_TEMPLATE = "https://s3api-{}.runpod.io/"
PART_BYTES = 256 << 20  # RunPod: at most 500 MB a part
SINGLE_PUT_MAX = 256 << 20  # RunPod: PutObject under 500 MB
READ_TIMEOUT_S = 7200  # RunPod: CompleteMultipartUpload of a large file can take long
_CHUNK = 8 << 20


class WarmError(DeployError):
    """A volume could not be warmed (its exit code is deploy's: errors.py owns the codes)."""


@dataclass(frozen=True)
class VolumeTarget:
    datacenter: str
    volume_id: str
    endpoint_url: str


def root_prefix() -> str:
    """PODENV_ROOT's default as a path inside the volume: /runpod-volume/podenv -> podenv."""
    root = ROOT.default or ""
    return root.removeprefix(VOLUME_MOUNT).strip("/")


def blob_key(digest: str) -> str:
    return f"{root_prefix()}/blobs/{digest.removeprefix('sha256:')}"


def manifest_key(name: str, version: str) -> str:
    return f"{root_prefix()}/manifests/{name}/{version}.json"


def volume_client(target: VolumeTarget, access_key: str, secret_key: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": 10},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.datacenter,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class _ChunkReader(io.RawIOBase):
    """The store's verified chunk stream as a file object, for boto3's managed upload."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _size_there(client: Any, target: VolumeTarget, key: str) -> int | None:
    from botocore.exceptions import ClientError

    try:
        return int(client.head_object(Bucket=target.volume_id, Key=key)["ContentLength"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _read_back_digest(client: Any, target: VolumeTarget, key: str) -> tuple[str, int]:
    body = client.get_object(Bucket=target.volume_id, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


@dataclass(frozen=True)
class Blob:
    """One blob a worker needs: ``label`` names it in messages (its layer, and its shard)."""

    label: str
    digest: str
    size: int


def release_blobs(store: Store, manifest: Manifest) -> list[Blob]:
    """Every blob of ``manifest``, each once: a sharded layer's shards and then its index (a
    volume whose cache has the index has every shard it names), an old-format layer's tar.zst."""
    from podenv.catalog import load_index

    blobs: dict[str, Blob] = {}
    for layer in manifest.layers:
        if not layer.sharded:
            blobs.setdefault(layer.digest, Blob(layer.name, layer.digest, layer.size))
            continue
        index = load_index(store, layer)
        for shard in index.shards:
            blobs.setdefault(shard.digest, Blob(f"{layer.name} shard {shard.name}", shard.digest, shard.size))
        index_size = len(index.canonical_bytes())
        blobs.setdefault(layer.digest, Blob(f"{layer.name} index", layer.digest, index_size))
    return list(blobs.values())


def _upload_blob(client: Any, store: Store, target: VolumeTarget, blob: Blob) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=SINGLE_PUT_MAX, multipart_chunksize=PART_BYTES, max_concurrency=4
    )
    reader = io.BufferedReader(_ChunkReader(store.read_blob(blob.digest, expected_size=blob.size)), _CHUNK)
    client.upload_fileobj(reader, target.volume_id, blob_key(blob.digest), Config=config)
    digest, size = _read_back_digest(client, target, blob_key(blob.digest))
    if (digest, size) != (blob.digest, blob.size):
        client.delete_object(Bucket=target.volume_id, Key=blob_key(blob.digest))
        raise IntegrityError(
            f"{blob.label} landed on volume {target.volume_id} ({target.datacenter}) as {size} bytes "
            f"with {digest}, not {blob.size} bytes with {blob.digest}; removed it, run warm again."
        )


@dataclass
class WarmResult:
    datacenter: str
    volume_id: str
    uploaded: list[str]
    present: list[str]
    bytes_uploaded: int


def warm_volume(
    client: Any, store: Store, manifest: Manifest, target: VolumeTarget, blobs: list[Blob]
) -> WarmResult:
    """Every blob of ``manifest`` into one volume's blob cache, verified, then the manifest."""
    result = WarmResult(target.datacenter, target.volume_id, [], [], 0)
    for blob in blobs:
        if _size_there(client, target, blob_key(blob.digest)) == blob.size:
            result.present.append(blob.label)
            continue
        _upload_blob(client, store, target, blob)
        result.uploaded.append(blob.label)
        result.bytes_uploaded += blob.size
        where = f"{target.datacenter} {target.volume_id}"
        _log.info(f"{where}: {blob.label} ({human_bytes(blob.size)}) uploaded and verified")
    data = manifest.canonical_bytes()
    client.put_object(Bucket=target.volume_id, Key=manifest_key(manifest.name, manifest.version), Body=data)
    return result


def warm(
    store: Store, manifest: Manifest, targets: list[VolumeTarget], access_key: str, secret_key: str
) -> list[WarmResult]:
    from botocore.exceptions import BotoCoreError, ClientError

    results = []
    blobs = release_blobs(store, manifest)
    for target in targets:
        client = volume_client(target, access_key, secret_key)
        try:
            results.append(warm_volume(client, store, manifest, target, blobs))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            raise WarmError(
                f"RunPod's volume API in {target.datacenter} refused volume {target.volume_id} ({code}): "
                "check the S3 API key and that the volume is in that datacenter."
            ) from None
        except BotoCoreError as error:
            raise WarmError(
                f"cannot reach the volume API of {target.datacenter} at {target.endpoint_url}: {error}."
            ) from None
    return results
