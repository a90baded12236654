"""Options and helpers shared by every command module."""
from __future__ import annotations

import click

from featstore.home import STORE_ENV, default_store

store_option = click.option("--store", "store_path", type=click.Path(), default=None,   # checked when opened
                            help=f"Store folder [default: ${STORE_ENV} or ./.featstore]")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def store_path(path):
    return path or default_store()


def open_store(path):
    """The Python API's handle on the store a command names (--store, else $FEATSTORE_STORE or ./.featstore)."""
    import featstore

    return featstore.open(store_path(path))


def log(msg: str) -> None:
    click.echo(msg, err=True)
