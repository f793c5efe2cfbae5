"""Release management: `releases`, `show`, `promote`, `rollback`, `diff`, `history`."""

import argparse
import json
from typing import Any

from podenv.cli_store import Subcommands, add_store_option, open_store_of
from podenv.errors import NotFoundError
from podenv.progress import human_bytes


def run_releases(arguments: argparse.Namespace) -> int:
    from podenv.catalog import list_releases

    store = open_store_of(arguments)
    rows = list_releases(store, arguments.name)
    if not rows:
        raise NotFoundError(
            f"{arguments.name} has no releases in {store.url}", fix="check the env name and the store."
        )
    if arguments.json:
        print(json.dumps([row.__dict__ for row in rows], indent=1))
        return 0
    print(f"{'VERSION':<16} {'DIGEST':<20} {'CREATED':<21} {'SIZE':>10}  CHANNELS")
    for row in rows:
        digest = row.digest.removeprefix("sha256:")[:12]
        channels = ",".join(row.channels)
        print(f"{row.version:<16} {digest:<20} {row.created:<21} {human_bytes(row.size):>10}  {channels}")
    return 0


def run_show(arguments: argparse.Namespace) -> int:
    from podenv.catalog import load_release

    manifest = load_release(open_store_of(arguments), arguments.name, arguments.version)
    document = manifest.document
    if arguments.json:
        print(json.dumps(document, indent=1))
        return 0
    print(f"{manifest.name} {manifest.version}  {manifest.digest}")
    builder, inputs = document["builder"], document["inputs"]
    print(f"created {document['created']} on {builder['host']}, git {builder['git_commit']}")
    print(f"platform {document['platform']}, CUDA {document['cuda'] or 'none'}, lock {inputs['lock_digest']}")
    for layer in manifest.layers:
        sizes = f"{human_bytes(layer.size):>10} ({human_bytes(layer.unpacked_size)} unpacked)"
        print(f"  {layer.kind:<5} {layer.name:<24} {sizes} -> {layer.target}")
    sbom = document["sbom"]
    print(f"{len(sbom['conda'])} conda and {len(sbom['pypi'])} PyPI packages")
    return 0


def run_promote(arguments: argparse.Namespace) -> int:
    from podenv.channels import promote, read_pointer

    store = open_store_of(arguments)
    if arguments.warm:
        from podenv.cli_deploy import warm_for_promote

        warm_for_promote(arguments, store)
    before, _ = read_pointer(store, arguments.name, arguments.channel)
    pointer = promote(store, arguments.name, arguments.version, arguments.channel)
    if pointer == before:
        print(f"{arguments.channel}: already at {pointer['version']} ({pointer['digest']}); nothing moved")
        return 0
    previous = (pointer["previous"] or {}).get("version", "nothing")
    print(f"{arguments.channel}: {previous} -> {pointer['version']} ({pointer['digest']})")
    return 0


def run_rollback(arguments: argparse.Namespace) -> int:
    from podenv.channels import rollback

    pointer = rollback(open_store_of(arguments), arguments.name, arguments.channel, arguments.to)
    print(
        f"{arguments.channel}: {pointer['previous']['version']} -> {pointer['version']} ({pointer['digest']})"
    )
    return 0


def run_diff(arguments: argparse.Namespace) -> int:
    from podenv.catalog import diff_releases, load_release

    store = open_store_of(arguments)
    old = load_release(store, arguments.name, arguments.old)
    new = load_release(store, arguments.name, arguments.new)
    difference = diff_releases(old, new, store)
    if arguments.json:
        print(json.dumps(difference, indent=1))
        return 0
    for key, version in difference["added"].items():
        print(f"+ {key} {version}")
    for key, version in difference["removed"].items():
        print(f"- {key} {version}")
    for key, change in difference["changed"].items():
        print(f"~ {key} {change['from']} -> {change['to']}")
    print(
        f"layers shared: {', '.join(difference['shared_layers']) or 'none'}; "
        f"to move a worker from {arguments.old} to {arguments.new}: fetch "
        f"{', '.join(difference['fetched_layers']) or 'nothing'}: {difference['fetch_blobs']} blobs, "
        f"{human_bytes(difference['fetch_bytes'])} of {human_bytes(difference['new_layer_bytes'])} "
        "(a worker fetches only the shards its volume's blob cache lacks)"
    )
    return 0


def run_history(arguments: argparse.Namespace) -> int:
    from podenv.channels import history

    store = open_store_of(arguments)
    entries = history(store, arguments.name, arguments.channel)
    if not entries:
        raise NotFoundError(
            f"channel {arguments.channel} of {arguments.name} does not exist in {store.url}",
            fix=f"list the channels with `podenv releases {arguments.name}`.",
        )
    for entry in entries:
        source = (entry["from"] or {}).get("version", "-")
        print(f"{entry['sequence']:>4} {entry['at']} {source} -> {entry['to']['version']} by {entry['by']}")
    return 0


def register(commands: Subcommands) -> None:
    def command(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("name", help="env name")
        add_store_option(parser)
        parser.set_defaults(run=run)
        return parser

    releases = command("releases", "list an env's releases with their channels", run_releases)
    releases.add_argument("--json", action="store_true")
    show = command("show", "summarise one release", run_show)
    show.add_argument("version")
    show.add_argument("--json", action="store_true")
    promote = command("promote", "point a channel at a release (compare-and-swap)", run_promote)
    promote.add_argument("version")
    promote.add_argument("--channel", required=True)
    promote.add_argument(
        "--warm", metavar="FILE", help="first warm the volumes of deploy/<endpoint>.yaml with the release"
    )
    from podenv.cli_deploy import add_warm_options

    add_warm_options(promote)
    rollback = command("rollback", "move a channel back (default: to its previous version)", run_rollback)
    rollback.add_argument("--channel", required=True)
    rollback.add_argument("--to", help="the version to go back to")
    diff = command("diff", "packages and layers that differ between two releases", run_diff)
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true")
    history_parser = command("history", "every move of a channel", run_history)
    history_parser.add_argument("--channel", required=True)
