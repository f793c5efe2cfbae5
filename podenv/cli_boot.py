"""The worker's subcommands: `boot`, `status`, `gc`, `doctor`. Options default from PODENV_* variables."""

import argparse
import json
import os
from pathlib import Path
from typing import Any

from podenv.log import get_logger

_log = get_logger("boot")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def run_boot(arguments: argparse.Namespace) -> int:
    from podenv.boot import BootError, BootOptions, BootReport, exec_into, prepare, summary_line, write_report
    from podenv.errors import PodenvError

    if not arguments.env:
        raise BootError("no env given: set PODENV_ENV (or --env) to the env to boot.")
    options = BootOptions(
        env=arguments.env,
        root=Path(arguments.root),
        store_url=arguments.store,
        version=arguments.version,
        digest=arguments.digest,
        channel=arguments.channel,
        keep_blobs=arguments.keep_blobs,
        quota=arguments.quota,
        lease_timeout=arguments.lease_timeout,
        writers=arguments.writers,
    )
    report = BootReport(env=options.env)
    try:
        ready = prepare(options, report)
    except PodenvError as error:
        report.error = str(error)
        if options.root.is_dir():
            write_report(options.root, report)
        raise
    report_path = write_report(options.root, report)
    _log.info(summary_line(report), extra={"fields": {**report.to_json(), "report": str(report_path)}})
    if arguments.command:
        from podenv.volume import Volume, hold_in_use

        hold_in_use(Volume(options.root), options.env, ready.version, heartbeat=options.lease_timeout / 3)
        exec_into(ready, arguments.command)
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


def run_doctor(arguments: argparse.Namespace) -> int:
    from podenv.doctor import DoctorOptions, report, run_checks

    options = DoctorOptions(
        root=Path(arguments.root),
        store_url=arguments.store,
        env=arguments.env,
        channel=arguments.channel,
        version=arguments.version,
        digest=arguments.digest,
        quota=arguments.quota,
        driver_cuda=arguments.assume_driver_cuda,
    )
    return report(run_checks(options))


def _add_root(parser: argparse.ArgumentParser) -> None:
    from podenv.volume import DEFAULT_ROOT

    parser.add_argument(
        "--root", default=_env("PODENV_ROOT", DEFAULT_ROOT), help="podenv's directory on the volume"
    )
    parser.add_argument(
        "--lease-timeout", type=float, default=60.0, help="seconds before a silent lease is stale"
    )


def _add_release_choice(parser: argparse.ArgumentParser) -> None:
    """Which release, from which store, with how much room: what boot and doctor both read."""
    parser.add_argument("--store", default=_env("PODENV_STORE"), help="default: $PODENV_STORE")
    parser.add_argument("--env", default=_env("PODENV_ENV"), help="default: $PODENV_ENV")
    parser.add_argument("--version", default=_env("PODENV_VERSION"), help="pin a version ($PODENV_VERSION)")
    parser.add_argument(
        "--digest", default=_env("PODENV_DIGEST"), help="pin a release digest ($PODENV_DIGEST)"
    )
    parser.add_argument("--channel", default=_env("PODENV_CHANNEL", "stable"), help="default: stable")
    parser.add_argument("--quota", type=int, default=None, help="bytes podenv may use on the volume")


def register(commands: Any) -> None:
    boot = commands.add_parser(
        "boot", help="install a release onto the volume (once, verified) and exec the worker"
    )
    _add_release_choice(boot)
    boot.add_argument("--keep-blobs", action="store_true", help="keep compressed layers on the volume")
    boot.add_argument(
        "--writers",
        type=int,
        default=int(_env("PODENV_WRITERS", "16")),
        help="parallel file writers ($PODENV_WRITERS, default 16): many on a network volume",
    )
    _add_root(boot)
    boot.add_argument("--exec", metavar="-- CMD", help="run CMD (everything after --exec --) in the env")
    boot.set_defaults(run=run_boot, command=None)

    status = commands.add_parser("status", help="installed releases, layers, leases and last boots (JSON)")
    _add_root(status)
    status.set_defaults(run=run_status)

    gc = commands.add_parser("gc", help="free layers no recent release uses")
    gc.add_argument("--keep", type=int, required=True, help="how many most recently used releases to keep")
    _add_root(gc)
    gc.set_defaults(run=run_gc)

    _register_doctor(commands)


def _register_doctor(commands: Any) -> None:
    from podenv.volume import DEFAULT_ROOT

    doctor = commands.add_parser(
        "doctor", help="check the store, release, volume and driver a boot needs; one PASS/FAIL line each"
    )
    _add_release_choice(doctor)
    doctor.add_argument("--root", default=_env("PODENV_ROOT", DEFAULT_ROOT), help="default: $PODENV_ROOT")
    doctor.add_argument(
        "--assume-driver-cuda",
        metavar="VERSION",
        help="check the release against a driver supporting this CUDA version instead of this machine's",
    )
    doctor.set_defaults(run=run_doctor)
