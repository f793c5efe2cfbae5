"""Job audio out: inline base64 when small or when no bucket is set, else S3 with a presigned URL.

The bucket is named by ``PODENV_OUTPUT_BUCKET``; the endpoint and credentials are the runpod
SDK's ``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID`` and ``BUCKET_SECRET_ACCESS_KEY``, read by
its own uploader (``runpod.serverless.utils.rp_upload``).
"""

import base64
import os
from typing import Any

from worker import settings
from worker.models.base import Audio

INLINE_MAX_BYTES = settings.read_int("PODENV_INLINE_MAX_BYTES")
_BUCKET_VARIABLES = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


def output_bucket() -> str | None:
    """The bucket outputs go to, or None when the worker has no complete bucket setting."""
    bucket = settings.read("PODENV_OUTPUT_BUCKET")
    if bucket and all(os.environ.get(name) for name in _BUCKET_VARIABLES):
        return bucket
    return None


def deliver_audio(audio: Audio, job_id: str) -> dict[str, Any]:
    """The job output's description of ``audio``: ``{"url": ...}`` or ``{"base64": ...}``."""
    described: dict[str, Any] = {"format": audio.extension, "bytes": len(audio.data)}
    bucket = output_bucket()
    if bucket is None or len(audio.data) <= INLINE_MAX_BYTES:
        described["base64"] = base64.b64encode(audio.data).decode("ascii")
        return described
    from runpod.serverless.utils.rp_upload import upload_in_memory_object

    described["url"] = upload_in_memory_object(
        f"output.{audio.extension}", audio.data, bucket_name=bucket, prefix=job_id
    )
    return described
