"""What the subcommand modules share: the ``--store`` option and the store it opens, and the
type of the subcommand table they register into."""

import argparse
from typing import TypeAlias

from podenv.errors import PodenvError
from podenv.settings import STORE
from podenv.store import Store

# What `ArgumentParser.add_subparsers()` returns (argparse names the class privately).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help=f"file:///PATH or s3://BUCKET/PREFIX (default: ${STORE.name})")


def open_store_of(arguments: argparse.Namespace) -> Store:
    """The store ``--store`` or ``$PODENV_STORE`` names."""
    from podenv.store import open_store

    url = arguments.store or STORE.read()
    if not url:
        raise PodenvError(f"no store given: pass --store URL or set {STORE.name}.")
    return open_store(url)
