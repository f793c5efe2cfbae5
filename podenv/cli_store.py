"""The ``--store`` option every store-reading subcommand takes, and the store it opens."""

import argparse

from podenv.errors import PodenvError
from podenv.settings import STORE
from podenv.store import Store


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help=f"file:///PATH or s3://BUCKET/PREFIX (default: ${STORE.name})")


def open_store_of(arguments: argparse.Namespace) -> Store:
    """The store ``--store`` or ``$PODENV_STORE`` names."""
    from podenv.store import open_store

    url = arguments.store or STORE.read()
    if not url:
        raise PodenvError(f"no store given: pass --store URL or set {STORE.name}.")
    return open_store(url)
