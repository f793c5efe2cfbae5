"""`podenv deploy`: a deploy file and a release -> a RunPod serverless endpoint serving it."""

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from podenv.log import get_logger

_log = get_logger("deploy")
_IMAGE_BY_DIGEST = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


def _release(arguments: argparse.Namespace, spec: Any):
    """The release to pin: --version, or the one --channel points at now."""
    from podenv.catalog import load_release
    from podenv.errors import NotFoundError
    from podenv.store import open_store

    store = open_store(arguments.store or spec["store"])
    if arguments.version:
        return load_release(store, spec.env, arguments.version)
    pointer = store.read_channel(spec.env, arguments.channel)
    if pointer is None:
        raise NotFoundError(
            f"channel {arguments.channel} of {spec.env} does not exist in {store.url}; pass --version."
        )
    target = json.loads(pointer.data)
    manifest = load_release(store, spec.env, target["version"])
    if manifest.digest != target["digest"]:
        raise NotFoundError(
            f"channel {arguments.channel} points at {target['version']} with digest {target['digest']}, "
            f"but that release's digest is {manifest.digest}; the store is inconsistent."
        )
    return manifest


def _image(arguments: argparse.Namespace, spec: Any) -> str:
    from podenv.deployfile import PLACEHOLDER_DIGEST
    from podenv.runpod.deploy import DeployError

    image = arguments.image or spec["image"]
    if not _IMAGE_BY_DIGEST.match(image):
        raise DeployError(f"--image {image} is not REPOSITORY@sha256:HEX; deploy an image by its digest.")
    if image.endswith(PLACEHOLDER_DIGEST) and not arguments.dry_run:
        raise DeployError(
            f"{spec.path} names the example image digest; set image to the digest the image workflow "
            "printed, or pass --image REPOSITORY@sha256:HEX."
        )
    return image


def _session(arguments: argparse.Namespace):
    from podenv.runpod.api import RunPodAPI
    from podenv.runpod.deploy import DeployError, Session

    key = os.environ.get("RUNPOD_API_KEY")
    if not key:
        if not arguments.dry_run:
            raise DeployError(
                "RUNPOD_API_KEY is not set; export a RunPod API key (it is read from nowhere else)."
            )
        _log.info("no RUNPOD_API_KEY: the dry run assumes nothing exists on RunPod yet")
        return Session(None, dry_run=True)
    return Session(RunPodAPI(key, arguments.api_url), dry_run=arguments.dry_run)


def run_deploy(arguments: argparse.Namespace) -> int:
    from podenv.deployfile import load_deploy_file
    from podenv.runpod.deploy import deploy

    spec = load_deploy_file(Path(arguments.file))
    image = _image(arguments, spec)
    manifest = _release(arguments, spec)
    session = _session(arguments)
    result = deploy(spec, manifest, image, session)
    sizes = result.sizes
    _log.info(
        f"{spec.env} {manifest.version}: container disk {sizes.container_disk_gb} GB, volumes "
        f"{sizes.volume_gb} GB, cold boot ~{sizes.cold_boot_s}s -> RUNPOD_INIT_TIMEOUT "
        f"{sizes.init_timeout_s}s, CUDA >= {sizes.min_cuda or 'none'}",
        extra={"fields": sizes.__dict__},
    )
    if arguments.dry_run:
        print(json.dumps([call.to_json() for call in result.calls], indent=1))
        return 0
    endpoint = result.endpoint
    if endpoint.created:
        state = "created"
    elif endpoint.changes:
        rolling = "; RunPod rolls the workers as they are replaced" if endpoint.rolls_workers else ""
        state = f"updated ({', '.join(endpoint.changes)}){rolling}"
    else:
        state = "unchanged, nothing sent"
    _log.info(
        f"endpoint {spec.endpoint} ({endpoint.id}) serves {spec.env} {manifest.version} "
        f"({manifest.digest}): {state}",
        extra={"fields": {"endpoint_id": endpoint.id, "requests": len(result.calls)}},
    )
    print(endpoint.id)
    return 0


def register(commands: Any) -> None:
    from podenv.runpod.api import DEFAULT_API_URL

    deploy = commands.add_parser(
        "deploy",
        help="create or update a RunPod serverless endpoint (and its template and volumes) serving a release",
    )
    deploy.add_argument("file", help="deploy/<endpoint>.yaml")
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--version", help="the release to pin on the endpoint")
    which.add_argument("--channel", default="stable", help="pin the release this channel points at now")
    deploy.add_argument("--image", help="worker image REPOSITORY@sha256:HEX (default: the deploy file's)")
    deploy.add_argument("--store", help="read the release from here (default: the deploy file's store)")
    deploy.add_argument("--dry-run", action="store_true", help="print the requests as JSON, send no write")
    deploy.add_argument(
        "--api-url", default=DEFAULT_API_URL, help=f"RunPod's REST API (default {DEFAULT_API_URL})"
    )
    deploy.set_defaults(run=run_deploy)
