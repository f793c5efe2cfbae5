"""A store in an S3 bucket (``s3://bucket/prefix``), on any S3 endpoint.

boto3 is imported only when an S3 store is opened: a warm boot never pays for it.
Credentials come from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN); the endpoint from the caller or AWS_ENDPOINT_URL. No message we
raise contains a credential: they name the endpoint, the bucket and the S3 error code.

Uploads and downloads are our own thin loops over boto3's client rather than s3transfer:
s3transfer's managed upload cannot send ``If-None-Match`` (so it could overwrite a blob),
and its download writes to a seekable file instead of yielding bytes in order, which
the streaming extractor needs.
"""

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlparse

from podenv.errors import NotFoundError, StoreError
from podenv.progress import Progress
from podenv.store.backend import ObjectInfo, PreconditionFailed, TransferConfig

T = TypeVar("T")

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def _credentials_from_environment() -> dict[str, str]:
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise StoreError(
            "no S3 credentials in the environment", fix="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        )
    credentials = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    if token := os.environ.get("AWS_SESSION_TOKEN"):
        credentials["aws_session_token"] = token
    return credentials


_session_lock = threading.RLock()
_shared_session: Any = None


def _after_fork_in_child() -> None:
    global _session_lock
    _session_lock = threading.RLock()  # a lock held by another thread at the fork stays held


os.register_at_fork(after_in_child=_after_fork_in_child)


def _session() -> Any:
    """One boto3 session per process. A new session reads S3's service model again (about
    0.4 s of CPU); clients made from one session share it, and a pool process forked after
    the boot made its first client inherits it loaded."""
    global _shared_session
    import boto3

    with _session_lock:
        if _shared_session is None:
            _shared_session = boto3.session.Session()
        return _shared_session


class S3Backend:
    def __init__(
        self, url: str, endpoint_url: str | None = None, transfer: TransferConfig | None = None
    ) -> None:
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = url.rstrip("/")
        self.endpoint = (
            endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.transfer = transfer or TransferConfig()
        if not self.bucket:
            raise StoreError(f"the store URL '{url}' names no bucket", fix="use s3://BUCKET/PREFIX.")
        self._client = self._make_client()
        self._blob_client: Any = None

    def _make_client(self, read_timeout: float = 60, retries: int = 3) -> Any:
        from botocore.config import Config

        config = Config(
            retries={"total_max_attempts": retries, "mode": "standard"},
            connect_timeout=min(5, read_timeout),
            read_timeout=read_timeout,
            max_pool_connections=self.transfer.concurrency * 2,
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            # We verify sha256 of every blob ourselves; extra checksum headers only trip up
            # S3-compatible servers that do not know them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        with _session_lock:  # a boto3 session is not thread-safe; its clients are
            return _session().client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=region,
                config=config,
                **_credentials_from_environment(),
            )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self) -> str:
        return f"{self.url} (endpoint {self.endpoint})" if self.endpoint else self.url

    def _call(self, operation: Callable[..., T], key: str, **arguments: Any) -> T:
        """One client call on ``key``, with botocore's failures turned into our errors."""
        with self._translated_errors(key):
            return operation(Bucket=self.bucket, Key=self._key(key), **arguments)

    @contextmanager
    def _translated_errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            yield
        except ClientError as error:
            self._raise_client_error(error, key)
        except EndpointConnectionError:
            raise StoreError(
                f"cannot reach the store at {self._where()}", fix="check AWS_ENDPOINT_URL and the network."
            ) from None
        except BotoCoreError as error:
            raise StoreError(f"the store at {self._where()} failed: {type(error).__name__}.") from None

    def _raise_client_error(self, error: Any, key: str) -> NoReturn:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code == "NoSuchBucket":
            raise StoreError(
                f"the bucket '{self.bucket}' does not exist at {self._where()}", fix="create it first."
            ) from None
        if code in _NOT_FOUND or status in _NOT_FOUND:
            raise NotFoundError(f"{key} does not exist in {self.url}.") from None
        if code in _PRECONDITION or status in _PRECONDITION:
            raise PreconditionFailed(key) from None
        if code in _DENIED or status in _DENIED:
            raise StoreError(
                f"the store at {self._where()} refused the credentials ({code or status})",
                fix="check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's permissions.",
            ) from None
        raise StoreError(f"the store at {self._where()} answered {code or status} for {key}.") from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self._call(self._client.head_object, key)
        except NotFoundError:
            return None
        return ObjectInfo(size=int(response["ContentLength"]))

    def get(self, key: str) -> tuple[bytes, str]:
        response = self._call(self._client.get_object, key)
        return response["Body"].read(), response["ETag"]

    def iter_chunks(self, key: str, size: int, progress: Progress | None) -> Iterator[bytes]:
        """Ranged GETs, ``concurrency`` in flight, yielded strictly in order, each bounded
        and retried from its last good byte (podenv.store.ranged)."""
        from podenv.store.ranged import RangedReader

        if self._blob_client is None:
            # Its own client: the short socket timeout is the stall detector of blob reads,
            # and the reader does the retrying (from the last good byte, which botocore cannot).
            self._blob_client = self._make_client(read_timeout=self.transfer.read_timeout, retries=1)
        client = self._blob_client

        def get_range(start: int, end: int) -> Any:
            return client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")

        reader = RangedReader(get_range, f"{key} from {self._where()}", size, self.transfer, progress)
        return reader.chunks()

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        response = self._call(self._client.put_object, key, Body=data, **conditions)
        return response["ETag"]

    def put_file(self, key: str, path: Path, progress: Progress | None) -> None:
        size = path.stat().st_size
        if size < self.transfer.multipart_threshold:
            self.put_bytes(key, path.read_bytes(), if_none_match=True)
            if progress is not None:
                progress.update(size)
            return
        self._put_multipart(key, path, size, progress)

    def _put_multipart(self, key: str, path: Path, size: int, progress: Progress | None) -> None:
        upload_id = self._call(self._client.create_multipart_upload, key)["UploadId"]
        try:
            parts = self._upload_parts(key, path, size, upload_id, progress)
            self._call(
                self._client.complete_multipart_upload,
                key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            self._abort_quietly(key, upload_id)
            raise

    def _upload_parts(
        self, key: str, path: Path, size: int, upload_id: str, progress: Progress | None
    ) -> list[dict[str, Any]]:
        step = self.transfer.part_size
        descriptor = os.open(path, os.O_RDONLY)

        def upload(number: int, start: int) -> dict[str, Any]:
            body = os.pread(descriptor, min(step, size - start), start)
            response = self._call(
                self._client.upload_part, key, UploadId=upload_id, PartNumber=number, Body=body
            )
            if progress is not None:
                progress.update(len(body))
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            with ThreadPoolExecutor(self.transfer.concurrency, thread_name_prefix="podenv-put") as pool:
                starts = range(0, size, step)
                return list(pool.map(upload, range(1, len(starts) + 1), starts))
        finally:
            os.close(descriptor)

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        # The original failure is what the user must see; a failed abort only leaves parts
        # that the bucket's lifecycle rule for incomplete uploads removes.
        with suppress(Exception):
            self._call(self._client.abort_multipart_upload, key, UploadId=upload_id)

    def list_keys(self, prefix: str) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        keys: list[str] = []
        with self._translated_errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[strip:] for key in keys)
