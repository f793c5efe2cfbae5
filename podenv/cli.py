"""The ``podenv`` command line. Each subcommand is one small function over the library.

Errors reach the user as one line, ``podenv: error: <sentence>``, with a non-zero exit
code that says which kind of error it was (see podenv.errors).
"""

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podenv import __version__
from podenv.cli_store import add_store_option, open_store_of
from podenv.errors import PodenvError, from_os_error
from podenv.log import LOG_FORMATS, configure, get_logger
from podenv.progress import Progress, human_bytes

if TYPE_CHECKING:
    from podenv.lock import PypiPackage

_log = get_logger("cli")


def _summary(message: str, **fields: object) -> None:
    _log.info(message, extra={"fields": fields})


def run_pack(arguments: argparse.Namespace) -> int:
    from podenv.archive import pack_tree

    source = Path(arguments.directory)
    if not source.is_dir():
        raise PodenvError(f"{source} is not a directory; pack takes the directory to archive.")
    started = time.monotonic()
    info = pack_tree(source, Path(arguments.output), level=arguments.level, progress=Progress("pack"))
    seconds = time.monotonic() - started
    _summary(
        f"packed {arguments.output}: {human_bytes(info.size)} from {human_bytes(info.unpacked_size)} "
        f"in {info.files} files, {info.digest}, {seconds:.1f}s",
        digest=info.digest,
        size=info.size,
        unpacked_size=info.unpacked_size,
        files=info.files,
        seconds=round(seconds, 3),
    )
    print(info.digest)
    return 0


def run_unpack(arguments: argparse.Namespace) -> int:
    from podenv.archive import extract_file

    archive = Path(arguments.archive)
    if not archive.is_file():
        raise PodenvError(f"{archive} does not exist or is not a file.")
    target = Path(arguments.target)
    started = time.monotonic()
    progress = Progress("unpack", total=archive.stat().st_size)
    result = extract_file(
        archive,
        target,
        expected_digest=arguments.digest,
        writers=arguments.writers,
        progress=progress,
    )
    seconds = time.monotonic() - started
    _summary(
        f"unpacked {target}: {result.files} files, {human_bytes(result.bytes_written)}, "
        f"{result.digest}, {seconds:.1f}s",
        digest=result.digest,
        files=result.files,
        bytes_written=result.bytes_written,
        seconds=round(seconds, 3),
    )
    return 0


def run_blob_put(arguments: argparse.Namespace) -> int:
    store = open_store_of(arguments)
    path = Path(arguments.file)
    if not path.is_file():
        raise PodenvError(f"{path} does not exist or is not a file.")
    started = time.monotonic()
    upload = store.put_blob(path, progress=Progress("upload", total=path.stat().st_size))
    seconds = time.monotonic() - started
    verb = "uploaded" if upload.uploaded else "already in the store, nothing uploaded:"
    _summary(
        f"{verb} {upload.digest} ({human_bytes(upload.size)}) in {seconds:.1f}s",
        digest=upload.digest,
        size=upload.size,
        uploaded=upload.uploaded,
        seconds=round(seconds, 3),
    )
    print(upload.digest)
    return 0


def run_blob_get(arguments: argparse.Namespace) -> int:
    from podenv.digests import digest_hex

    digest_hex(arguments.digest)
    store = open_store_of(arguments)
    output = Path(arguments.output)
    started = time.monotonic()
    size = store.download_blob(arguments.digest, output, progress=Progress("download"))
    seconds = time.monotonic() - started
    _summary(
        f"downloaded {arguments.digest} to {output} ({human_bytes(size)}, verified) in {seconds:.1f}s",
        digest=arguments.digest,
        size=size,
        seconds=round(seconds, 3),
    )
    return 0


def run_manifest(arguments: argparse.Namespace) -> int:
    from podenv.manifest import Manifest

    path = Path(arguments.file)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PodenvError(f"cannot read {path}: {error.strerror}.") from None
    manifest = Manifest.from_bytes(data)
    print(f"{manifest.name} {manifest.version} {manifest.digest} ({len(manifest.layers)} layers)")
    return 0


def _flags(package: "PypiPackage") -> str:
    flags = []
    if package.kind != "wheel":
        flags.append(package.kind.upper())
    if package.sha256 is None:
        flags.append("NO-HASH")
    return ",".join(flags)


def run_plan(arguments: argparse.Namespace) -> int:
    import json

    from podenv.lock import read_plan

    plan = read_plan(Path(arguments.lockfile), arguments.env, arguments.platform)
    if arguments.json:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    cuda = plan.cuda or "none"
    print(f"# {plan.lock_path} (lock v{plan.lock_version}) environment {plan.environment} on {plan.platform}")
    print(f"# channels: {', '.join(plan.channels)}; CUDA required: {cuda}")
    for conda in plan.conda:
        print(f"conda {conda.name} {conda.version} {conda.build} {conda.url} sha256:{conda.sha256 or '-'}")
    for pypi in plan.pypi:
        hash_text = f"sha256:{pypi.sha256}" if pypi.sha256 else "sha256:-"
        print(f"pypi  {pypi.name} {pypi.version} {pypi.location} {hash_text} {_flags(pypi)}".rstrip())
    flagged = [package for package in plan.pypi if _flags(package)]
    print(
        f"# {len(plan.conda)} conda and {len(plan.pypi)} PyPI packages; "
        f"{len(flagged)} flagged (SDIST: built at install time, NO-HASH: not verifiable)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podenv",
        description="Locked GPU environments, shipped as verified artifacts to serverless workers.",
    )
    parser.add_argument("--version", action="version", version=f"podenv {__version__}")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pack = commands.add_parser("pack", help="pack a directory into a deterministic tar.zst layer")
    pack.add_argument("directory")
    pack.add_argument("output")
    pack.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    pack.set_defaults(run=run_pack)

    unpack = commands.add_parser("unpack", help="verify and safely extract a tar.zst layer")
    unpack.add_argument("archive")
    unpack.add_argument("target", help="directory to create (must not exist)")
    unpack.add_argument("--digest", help="expected sha256:<hex> of the archive")
    unpack.add_argument("--writers", type=int, default=16, help="parallel file writers (default 16)")
    unpack.set_defaults(run=run_unpack)

    blob = commands.add_parser("blob", help="put or get a content-addressed blob in a store")
    blob_commands = blob.add_subparsers(dest="blob_command", metavar="ACTION", required=True)
    put = blob_commands.add_parser("put", help="upload a file unless the store has it")
    put.add_argument("file")
    add_store_option(put)
    put.set_defaults(run=run_blob_put)
    get = blob_commands.add_parser("get", help="download and verify a blob")
    get.add_argument("digest")
    get.add_argument("output")
    add_store_option(get)
    get.set_defaults(run=run_blob_get)

    plan = commands.add_parser("plan", help="print what a lock installs for one environment and platform")
    plan.add_argument("lockfile")
    plan.add_argument("--env", required=True, help="pixi environment name")
    plan.add_argument("--platform", default="linux-64", help="conda platform (default linux-64)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(run=run_plan)

    from podenv import cli_boot, cli_build, cli_deploy, cli_init, cli_release

    cli_build.register(commands)
    cli_boot.register(commands)
    cli_deploy.register(commands)
    cli_deploy.register_warm(commands)
    cli_init.register(commands)
    cli_release.register(commands)

    manifest = commands.add_parser("manifest", help="validate a release manifest and print its digest")
    manifest.add_argument("file")
    manifest.set_defaults(run=run_manifest)
    return parser


def _split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``boot ... --exec -- CMD ARGS`` hands CMD ARGS over untouched (argparse would parse them)."""
    if "--exec" not in argv:
        return argv, None
    index = argv.index("--exec")
    command = argv[index + 1 :]
    return argv[:index], command[1:] if command[:1] == ["--"] else command


def _fail(error: PodenvError) -> int:
    print(f"podenv: error: {error}", file=sys.stderr)
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    options, exec_argv = _split_exec(list(sys.argv[1:] if argv is None else argv))
    arguments = build_parser().parse_args(options)
    if exec_argv is not None:
        arguments.exec_argv = exec_argv
    configure(arguments.log_format, arguments.verbose)
    run: Callable[[argparse.Namespace], int] = arguments.run
    try:
        return run(arguments)
    except BrokenPipeError:
        # The reader stopped reading (`podenv status | head`): nothing more to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        return _fail(from_os_error(error, f"podenv {arguments.command}"))
    except PodenvError as error:
        return _fail(error)
    except KeyboardInterrupt:
        print("podenv: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
