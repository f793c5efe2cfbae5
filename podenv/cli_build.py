"""The build box's subcommands, run by the Snakemake rules (one command per rule)."""

import argparse
import json
import time
from pathlib import Path

from podenv.cli_store import Subcommands, add_store_option, open_store_of
from podenv.log import get_logger

_log = get_logger("build")


def run_env_install(arguments: argparse.Namespace) -> int:
    from podenv.envbuild import install_env
    from podenv.envspec import load_env_spec

    spec = load_env_spec(Path(arguments.env_spec))
    result = install_env(
        Path(arguments.lock),
        spec.pixi_environment,
        spec.platform,
        Path(arguments.prefix),
        Path(arguments.cache),
        spec.allow_unhashed,
    )
    _log.info(
        f"installed {spec.name}: {len(result.plan.conda)} conda and {len(result.plan.pypi)} PyPI packages "
        f"into {result.prefix} in {result.seconds:.1f}s",
        extra={"fields": {"env": spec.name, "seconds": round(result.seconds, 3)}},
    )
    return 0


def run_env_pack(arguments: argparse.Namespace) -> int:
    from podenv.envbuild import pack_env
    from podenv.layout import ENV_TARGET
    from podenv.release import sharded_layer_document, write_layer_info

    output = Path(arguments.output)
    index = pack_env(Path(arguments.prefix), output)
    layer = sharded_layer_document(index, "env", "env", ENV_TARGET)
    write_layer_info(Path(arguments.info), layer, output)
    return 0


def run_env_build(arguments: argparse.Namespace) -> int:
    """Install, pack, and remove the prefix: the installed env never leaves this command. On a
    cluster only the layer travels (through S3, which keeps no symlinks and no exec bits)."""
    import shutil

    prefix = Path(arguments.prefix)
    shutil.rmtree(prefix, ignore_errors=True)  # what a killed run left
    try:
        run_env_install(arguments)
        return run_env_pack(arguments)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def run_code_pack(arguments: argparse.Namespace) -> int:
    from podenv.codelayer import pack_code
    from podenv.release import layer_document, write_layer_info

    output = Path(arguments.output)
    info = pack_code(Path(arguments.source), output)
    write_layer_info(Path(arguments.info), layer_document(info, "code", "code", "code"), output)
    _log.info(
        f"code layer: {info.files} files from {arguments.source}, {info.digest}",
        extra={"fields": {"digest": info.digest, "files": info.files}},
    )
    return 0


def run_model_build(arguments: argparse.Namespace) -> int:
    from podenv.envspec import load_env_spec
    from podenv.models import build_model_layer
    from podenv.release import layer_document, write_layer_info

    spec = load_env_spec(Path(arguments.env_spec)).model(arguments.model)
    output = Path(arguments.output)
    started = time.monotonic()
    info = build_model_layer(spec, Path(arguments.workdir), output)
    layer = layer_document(info, "model", spec.name, spec.target, {"model": spec.layer_document})
    write_layer_info(Path(arguments.info), layer, output)
    _log.info(
        f"model layer {spec.name}: {info.files} files, {info.digest}, {time.monotonic() - started:.1f}s",
        extra={"fields": {"layer": spec.name, "digest": info.digest, "size": info.size}},
    )
    return 0


def run_release_make(arguments: argparse.Namespace) -> int:
    from podenv.envspec import load_env_spec
    from podenv.release import make_manifest

    spec = load_env_spec(Path(arguments.env_spec))
    version = arguments.version or spec.version
    layers = [Path(path) for path in arguments.layers]
    manifest = make_manifest(spec, Path(arguments.lock), layers, version, Path(arguments.workdir))
    Path(arguments.output).write_bytes(manifest.canonical_bytes())
    _log.info(
        f"release {manifest.name} {manifest.version}: {len(manifest.layers)} layers, {manifest.digest}",
        extra={"fields": {"env": manifest.name, "version": manifest.version, "digest": manifest.digest}},
    )
    return 0


def _archives(layer_infos: list[str]) -> dict[str, Path]:
    from podenv.release import read_layer_info

    archives = {}
    for path in layer_infos:
        layer, archive = read_layer_info(Path(path))
        archives[layer["digest"]] = archive
    return archives


def run_publish(arguments: argparse.Namespace) -> int:
    from podenv.manifest import Manifest
    from podenv.release import publish

    store = open_store_of(arguments)
    manifest = Manifest.from_bytes(Path(arguments.release).read_bytes())
    report = publish(store, manifest, _archives(arguments.layers), arguments.channel or None)
    if arguments.receipt:
        receipt = {**report.to_json(), "store": store.url}
        Path(arguments.receipt).write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    print(manifest.digest)
    return 0


def run_lock(arguments: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from podenv.errors import PodenvError

    pixi = shutil.which("pixi")
    if pixi is None:
        raise PodenvError(
            "pixi.lock is missing and pixi is not on PATH: install pixi and run `pixi lock` "
            "on a machine that reaches your conda channels, then commit pixi.lock."
        )
    result = subprocess.run([pixi, "lock", "--manifest-path", arguments.manifest])
    if result.returncode != 0:
        raise PodenvError(f"`pixi lock` failed (exit {result.returncode}); its output above says why.")
    return 0


def register(commands: Subcommands) -> None:
    """Add ``env``, ``code``, ``model``, ``release`` and ``publish`` to the podenv parser."""
    lock = commands.add_parser("lock", help="write pixi.lock with pixi (the only command that needs pixi)")
    lock.add_argument("--manifest", default="pixi.toml")
    lock.set_defaults(run=run_lock)

    env = commands.add_parser("env", help="install a locked environment, or pack it as a layer")
    env_commands = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    install = env_commands.add_parser("install", help="install what pixi.lock pins into a new prefix")
    install.add_argument("env_spec", help="envs/<name>.yaml")
    install.add_argument("--lock", default="pixi.lock")
    install.add_argument("--prefix", required=True, help="directory to create")
    install.add_argument("--cache", required=True, help="package and download cache")
    install.set_defaults(run=run_env_install)
    pack = env_commands.add_parser(
        "pack", help="pack a prefix into a package-sharded deterministic layer (conda-pack)"
    )
    pack.add_argument("prefix")
    pack.add_argument("--output", required=True, help="the directory to write: shard blobs and index.json")
    pack.add_argument("--info", required=True, help="the layer record (JSON) to write")
    pack.set_defaults(run=run_env_pack)

    build = env_commands.add_parser(
        "build", help="install, pack as a layer and remove the prefix, in one step (the pipeline's rule)"
    )
    build.add_argument("env_spec", help="envs/<name>.yaml")
    build.add_argument("--lock", default="pixi.lock")
    build.add_argument("--prefix", required=True, help="scratch directory to install into; removed")
    build.add_argument("--cache", required=True, help="package and download cache")
    build.add_argument("--output", required=True, help="the layer to write")
    build.add_argument("--info", required=True, help="the layer record (JSON) to write")
    build.set_defaults(run=run_env_build)

    code_group = commands.add_parser("code", help="pack the handler and its plugins as the code layer")
    code_commands = code_group.add_subparsers(dest="code_command", metavar="ACTION", required=True)
    code = code_commands.add_parser("pack", help="pack the worker package deterministically")
    code.add_argument("source", help="the worker package's directory (worker/)")
    code.add_argument("--output", required=True, help="the tar.zst to write")
    code.add_argument("--info", required=True, help="the layer record (JSON) to write")
    code.set_defaults(run=run_code_pack)

    model_group = commands.add_parser("model", help="build one model layer in its cache layout")
    model_commands = model_group.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    model = model_commands.add_parser("build", help="fetch a pinned model and pack it as a layer")
    model.add_argument("env_spec", help="envs/<name>.yaml")
    model.add_argument("model", help="the model's name in the env YAML")
    model.add_argument("--output", required=True)
    model.add_argument("--info", required=True)
    model.add_argument("--workdir", default=".", help="base of local model paths")
    model.set_defaults(run=run_model_build)

    release = commands.add_parser("release", help="write the release manifest of built layers")
    release.add_argument("env_spec", help="envs/<name>.yaml")
    release.add_argument("--lock", default="pixi.lock")
    release.add_argument("--layers", nargs="+", required=True, help="layer records (JSON)")
    release.add_argument("--version", help="release version (default: the env YAML's)")
    release.add_argument("--output", required=True)
    release.add_argument("--workdir", default=".", help="git checkout recorded as the builder's commit")
    release.set_defaults(run=run_release_make)

    publish = commands.add_parser(
        "publish", help="upload a release's missing layers, the release, and a channel"
    )
    publish.add_argument("release", help="release.json written by `podenv release`")
    publish.add_argument("--layers", nargs="+", required=True, help="layer records (JSON)")
    publish.add_argument("--channel", help="move this channel to the release after publishing")
    publish.add_argument("--receipt", help="write what was uploaded here (JSON)")
    add_store_option(publish)
    publish.set_defaults(run=run_publish)
