"""`podenv deploy`: a deploy file and a release -> a RunPod serverless endpoint serving it."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podenv.cli_store import Subcommands
from podenv.log import get_logger

if TYPE_CHECKING:
    from podenv.deployfile import DeploySpec
    from podenv.manifest import Manifest
    from podenv.runpod.api import RunPodAPI
    from podenv.runpod.deploy import Session
    from podenv.runpod.warm import VolumeTarget

_log = get_logger("deploy")
_IMAGE_BY_DIGEST = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


def _release(arguments: argparse.Namespace, spec: DeploySpec) -> Manifest:
    """The release to pin: --version, or the one --channel points at now (boot's own resolution)."""
    from podenv.resolve import ReleaseOptions, check_names, load_manifest, resolve_target
    from podenv.store import open_store

    store = open_store(arguments.store or spec["store"])
    options = ReleaseOptions(
        env=spec.env, store_url=store.url, version=arguments.version, channel=arguments.channel
    )
    check_names(options)
    pointer = None if options.pinned else store.read_channel(spec.env, arguments.channel)
    target = resolve_target(options, store, pointer.data if pointer else None)
    return load_manifest(store, spec.env, target)


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


def _session(arguments: argparse.Namespace) -> Session:
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
    warm_first = None
    if arguments.warm and not arguments.dry_run:

        def warm_first(pairs: list[tuple[str, str]]) -> None:
            from podenv.store import open_store

            warm_volumes(arguments, spec, manifest, open_store(arguments.store or spec["store"]), pairs)

    result = deploy(spec, manifest, image, session, before_endpoint=warm_first)
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


def register(commands: Subcommands) -> None:
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
    deploy.add_argument(
        "--warm",
        action="store_true",
        help="warm every volume with the release (podenv warm) before the endpoint moves",
    )
    _add_s3_endpoint(deploy)
    deploy.set_defaults(run=run_deploy)


# podenv warm


def _volume_targets(
    arguments: argparse.Namespace, spec: Any, pairs: list[tuple[str, str]] | None
) -> list[VolumeTarget]:
    """(datacenter, volume id, endpoint URL) of each volume: ids from the file or RunPod's API."""
    from podenv.runpod.deploy import DeployError, Session, ensure_volume
    from podenv.runpod.sizing import sizes_for
    from podenv.runpod.warm import ENDPOINT_TEMPLATE, VolumeTarget

    overrides = dict(item.split("=", 1) for item in arguments.s3_endpoint or [])
    if pairs is None:
        if not spec.volumes:
            raise DeployError(f"{spec.path} lists no volumes to warm.")
        session = Session(_api(arguments), dry_run=True) if any(v.id is None for v in spec.volumes) else None
        listed: list[Any] | None = None

        def volumes() -> list[Any]:
            nonlocal listed
            assert session is not None  # opened because a volume has no id
            listed = listed if listed is not None else session.listed("/v2/network-volumes", "networkVolumes")
            return listed

        def volume_id(volume: Any) -> str:
            if volume.id is not None:
                return str(volume.id)
            assert session is not None  # opened because a volume has no id
            return ensure_volume(session, spec, volume, sizes, volumes)

        sizes = sizes_for(arguments.manifest, spec["placement"], True)
        pairs = [(volume.datacenter, volume_id(volume)) for volume in spec.volumes]
        if session is not None and session.calls:
            # What a deploy would change first: a volume to create, or one too small to grow.
            raise DeployError(f"first `podenv deploy {spec.path}`: it would {session.calls[0].why}.")
    return [
        VolumeTarget(dc, volume_id, overrides.get(dc) or ENDPOINT_TEMPLATE.format(dc.lower()))
        for dc, volume_id in pairs
    ]


def _api(arguments: argparse.Namespace) -> RunPodAPI:
    from podenv.runpod.api import RunPodAPI
    from podenv.runpod.deploy import DeployError

    key = os.environ.get("RUNPOD_API_KEY")
    if not key:
        raise DeployError(
            "RUNPOD_API_KEY is not set; it finds volumes by name (or give their ids in the file)."
        )
    return RunPodAPI(key, arguments.api_url)


def warm_volumes(
    arguments: argparse.Namespace,
    spec: Any,
    manifest: Any,
    store: Any,
    pairs: list[tuple[str, str]] | None = None,
) -> None:
    """Warm the deploy file's volumes (or ``pairs``: (datacenter, volume id)) with ``manifest``."""
    from podenv.runpod.deploy import DeployError
    from podenv.runpod.warm import warm

    access, secret = os.environ.get("RUNPOD_S3_ACCESS_KEY"), os.environ.get("RUNPOD_S3_SECRET_KEY")
    if not access or not secret:
        raise DeployError(
            "RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY are not set: warming uses an S3 API key "
            "(RunPod console, Settings, S3 API Keys), not the RunPod API key."
        )
    arguments.manifest = manifest
    targets = _volume_targets(arguments, spec, pairs)
    for result in warm(store, manifest, targets, access, secret):
        _log.info(
            f"warmed {result.datacenter} volume {result.volume_id} with {manifest.name} {manifest.version}: "
            f"{len(result.uploaded)} blobs uploaded and verified, {len(result.present)} already there",
            extra={"fields": result.__dict__},
        )


def warm_for_promote(arguments: argparse.Namespace, store: Any) -> None:
    """`podenv promote --warm FILE`: the release into every volume of FILE, then the move."""
    from podenv.catalog import load_release
    from podenv.deployfile import load_deploy_file
    from podenv.runpod.deploy import DeployError

    spec = load_deploy_file(Path(arguments.warm))
    if spec.env != arguments.name:
        raise DeployError(
            f"{spec.path} serves env {spec.env}, not {arguments.name}; nothing warmed or moved."
        )
    warm_volumes(arguments, spec, load_release(store, arguments.name, arguments.version), store)


def run_warm(arguments: argparse.Namespace) -> int:
    from podenv.catalog import load_release
    from podenv.deployfile import load_deploy_file
    from podenv.store import open_store

    spec = load_deploy_file(Path(arguments.volumes))
    store = open_store(arguments.store or spec["store"])
    warm_volumes(arguments, spec, load_release(store, spec.env, arguments.release), store)
    return 0


def register_warm(commands: Subcommands) -> None:
    warm = commands.add_parser(
        "warm", help="put a release into each datacenter's network volume (RunPod's S3 volume API)"
    )
    warm.add_argument("release", help="the version of the deploy file's env")
    warm.add_argument("--volumes", required=True, metavar="FILE", help="deploy/<endpoint>.yaml")
    warm.add_argument("--store", help="read the release from here (default: the deploy file's store)")
    add_warm_options(warm)
    warm.set_defaults(run=run_warm)


def add_warm_options(parser: argparse.ArgumentParser) -> None:
    """What warming needs besides the release: the volume API endpoints, RunPod's API (by name)."""
    from podenv.runpod.api import DEFAULT_API_URL

    _add_s3_endpoint(parser)
    parser.add_argument("--api-url", default=DEFAULT_API_URL, help=argparse.SUPPRESS)


def _add_s3_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--s3-endpoint",
        action="append",
        metavar="DATACENTER=URL",
        help="a datacenter's volume API (default https://s3api-<datacenter>.runpod.io/); repeatable",
    )
