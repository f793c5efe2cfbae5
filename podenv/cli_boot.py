"""The worker's subcommands: `boot`, `status`, `gc`, `doctor`. Options default from PODENV_* variables."""

import argparse
import json
from contextlib import suppress
from pathlib import Path
from typing import Any

from podenv import settings
from podenv.cli_store import Subcommands
from podenv.log import get_logger
from podenv.runpod.mount import default_placement

_log = get_logger("boot")


def run_boot(arguments: argparse.Namespace) -> int:
    from podenv.boot import BootOptions, BootReport, exec_into, prepare, summary_line, write_report
    from podenv.boot.report import report_path
    from podenv.errors import BootError, PodenvError, from_os_error

    if not arguments.env:
        raise BootError(f"no env given: set {settings.ENV.name} (or --env) to the env to boot.")
    if arguments.exec_argv is not None and not arguments.exec_argv:
        raise BootError("--exec names no command", fix="write the command after it: --exec -- CMD ARGS.")
    options = BootOptions(
        **_release_options(arguments),
        keep_blobs=arguments.keep_blobs,
        lease_timeout=arguments.lease_timeout,
        writers=arguments.writers,
        placement=arguments.placement,
        local_root=Path(arguments.local_root),
        jobs=arguments.jobs,
        require_code=arguments.require_code,
    )
    report = BootReport(env=arguments.env)
    try:
        ready = prepare(options, report, claim_in_use=bool(arguments.exec_argv))
    except (PodenvError, OSError) as error:
        # The one error path of a boot: one sentence, and the report says it too.
        failure = (
            error
            if isinstance(error, PodenvError)
            else from_os_error(error, f"boot of {options.env}", BootError)
        )
        report.error = str(failure)
        if report_path(options.root, report).exists():  # reserved once the volume was there
            with suppress(OSError):
                write_report(options.root, report)
        raise failure from None
    written = write_report(options.root, report)
    fields = {**report.to_json(), "report": str(written)}
    _log.info(summary_line(report), extra={"fields": fields, "text_fields": ("report",)})
    if arguments.exec_argv:
        exec_into(ready, arguments.exec_argv)
    print(ready.directory)
    return 0


def run_status(arguments: argparse.Namespace) -> int:
    from podenv.maintenance import status
    from podenv.volume import Volume

    print(json.dumps(status(Volume(Path(arguments.root)), arguments.lease_timeout), indent=1, default=str))
    return 0


def run_gc(arguments: argparse.Namespace) -> int:
    from podenv.maintenance import gc
    from podenv.progress import human_bytes
    from podenv.volume import Volume

    result = gc(Volume(Path(arguments.root)), arguments.keep, arguments.lease_timeout)
    _log.info(
        f"gc kept {len(result.kept_releases)} releases, removed {len(result.removed_releases)} releases "
        f"and {len(result.removed_layers)} layers, freed {human_bytes(result.freed_bytes)}",
        extra={"fields": result.__dict__},
    )
    return 0


def run_verify(arguments: argparse.Namespace) -> int:
    from podenv.boot.warm import local_release
    from podenv.errors import IntegrityError, NotFoundError
    from podenv.fileio import read_file_chunks
    from podenv.manifest import Manifest
    from podenv.store import open_store
    from podenv.verify import verify_layer
    from podenv.volume import Volume

    volume = Volume(Path(arguments.root))
    marker = local_release(volume, arguments.env, arguments.version)
    if marker is None:
        raise NotFoundError(f"release {arguments.env} {arguments.version} is not installed on {volume.root}")
    manifest = Manifest.from_bytes(
        (volume.release_dir(arguments.env, arguments.version) / "release.json").read_bytes()
    )
    if manifest.digest != marker["digest"]:
        raise IntegrityError(
            f"the installed release.json of {arguments.env} {arguments.version} is not the one installed"
        )
    failed = 0
    for layer in manifest.layers:
        cached = volume.blob_path(layer.digest)
        if cached.is_file():
            chunks = read_file_chunks(cached)
        elif arguments.store:
            chunks = open_store(arguments.store).read_blob(layer.digest, expected_size=layer.size)
        else:
            raise NotFoundError(f"layer {layer.name}'s blob is not cached on the volume", fix="give --store.")
        check = verify_layer(volume, layer, chunks)
        print(check.line)
        failed += bool(check.differences)
    return IntegrityError.exit_code if failed else 0


def run_doctor(arguments: argparse.Namespace) -> int:
    from podenv.doctor import report, run_checks
    from podenv.resolve import ReleaseOptions

    options = ReleaseOptions(**_release_options(arguments))
    local_root = Path(arguments.local_root)
    return report(run_checks(options, driver_cuda=arguments.assume_driver_cuda, local_root=local_root))


def _release_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The fields of `ReleaseOptions` from the options `_add_release_choice` added."""
    return {
        "root": Path(arguments.root),
        "env": arguments.env,
        "store_url": arguments.store,
        "version": arguments.version,
        "digest": arguments.digest,
        "channel": arguments.channel,
        "quota": arguments.quota,
    }


def _not_empty(text: str) -> str:
    """An option's value: an empty one (``--root ""``) would mean "here" or "whatever is default"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _size(text: str) -> int:
    from podenv.progress import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_root(parser: argparse.ArgumentParser) -> None:
    root = settings.ROOT
    parser.add_argument(
        "--root",
        type=_not_empty,
        default=root.read(),
        help=f"{root.meaning} (${root.name}, default {root.default})",
    )


def _add_local_root(parser: argparse.ArgumentParser) -> None:
    local_root = settings.LOCAL_ROOT
    parser.add_argument(
        "--local-root",
        default=local_root.read(),
        help=f"{local_root.meaning} (${local_root.name}, default {local_root.default})",
    )


def _add_lease_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease-timeout", type=float, default=60.0, help="seconds before a silent lease is stale"
    )


def _add_release_choice(parser: argparse.ArgumentParser) -> None:
    """Which release, from which store, onto which volume, with how much room: boot and doctor read it."""
    for option, setting in (
        ("--store", settings.STORE),
        ("--env", settings.ENV),
        ("--version", settings.VERSION),
        ("--digest", settings.DIGEST),
        ("--channel", settings.CHANNEL),
    ):
        default = f", default {setting.default}" if setting.default else ""
        parser.add_argument(
            option,
            type=_not_empty,
            default=setting.read(),
            help=f"{setting.meaning} (${setting.name}{default})",
        )
    parser.add_argument(
        "--quota", type=_size, default=None, help="what podenv may use on the volume: bytes, or 10G, 500M"
    )
    _add_root(parser)


def register(commands: Subcommands) -> None:
    boot = commands.add_parser(
        "boot", help="install a release onto the volume (once, verified) and exec the worker"
    )
    _add_release_choice(boot)
    boot.add_argument("--keep-blobs", action="store_true", help="keep compressed layers on the volume")
    writers = settings.WRITERS
    boot.add_argument(
        "--writers",
        type=int,
        default=int(count) if (count := writers.read()) else None,
        help=f"{writers.meaning} (${writers.name})",
    )
    boot.add_argument(
        "--jobs",
        type=int,
        default=int(settings.JOBS.read() or 0),
        help=f"{settings.JOBS.meaning} (${settings.JOBS.name}; default: the CPUs the worker has)",
    )
    _add_lease_timeout(boot)
    placement = settings.PLACEMENT
    boot.add_argument(
        "--placement",
        choices=("local", "volume"),
        default=default_placement(),
        help=f"{placement.meaning} (${placement.name})",
    )
    _add_local_root(boot)
    boot.add_argument(
        "--require-code",
        action="store_true",
        help="refuse a release without a code layer (the worker image's start.sh: it has no handler)",
    )
    boot.add_argument("--exec", metavar="-- CMD", help="run CMD (everything after --exec --) in the env")
    boot.set_defaults(run=run_boot, exec_argv=None)

    status = commands.add_parser("status", help="installed releases, layers, leases and last boots (JSON)")
    _add_root(status)
    _add_lease_timeout(status)
    status.set_defaults(run=run_status)

    gc = commands.add_parser("gc", help="free layers no recent release uses")
    gc.add_argument("--keep", type=int, required=True, help="how many most recently used releases to keep")
    _add_root(gc)
    _add_lease_timeout(gc)
    gc.set_defaults(run=run_gc)

    verify = commands.add_parser(
        "verify", help="re-hash an installed release's layers against their archives (one line per layer)"
    )
    _add_root(verify)
    verify.add_argument(
        "--env", type=_not_empty, default=settings.ENV.read(), help="the env (default $PODENV_ENV)"
    )
    verify.add_argument("--version", type=_not_empty, required=True, help="the installed version")
    verify.add_argument(
        "--store", type=_not_empty, default=settings.STORE.read(), help="for blobs not cached"
    )
    verify.set_defaults(run=run_verify)

    _register_doctor(commands)


def _register_doctor(commands: Subcommands) -> None:
    doctor = commands.add_parser(
        "doctor", help="check the store, release, volume and driver a boot needs; one PASS/FAIL line each"
    )
    _add_release_choice(doctor)
    _add_local_root(doctor)
    doctor.add_argument(
        "--assume-driver-cuda",
        metavar="VERSION",
        help="check the release against a driver supporting this CUDA version instead of this machine's",
    )
    doctor.set_defaults(run=run_doctor)
