"""Options and helpers shared by every command module."""
from __future__ import annotations

import os

import click

from featstore.errors import FeatstoreError
from featstore.home import STORE_ENV, default_store

store_option = click.option("--store", "store_path", type=click.Path(), default=None,   # checked when opened
                            help=f"Store folder [default: ${STORE_ENV} or ./.featstore]")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def store_path(path):
    """The store a command names: its own --store, else the one given before the command, else the default."""
    before = _store_before_command()
    if path and before and os.path.abspath(path) != os.path.abspath(before):
        raise FeatstoreError(f"--store given twice: {before} before the command and {path} after it; give one")
    return path or before or default_store()


def _store_before_command():
    """The --store given before the command (`featstore --store DIR COMMAND`), or None."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().params.get("store_path") if ctx is not None else None


def open_store(path):
    """The Python API's handle on the store a command names (--store, else $FEATSTORE_STORE or ./.featstore)."""
    import featstore

    return featstore.open(store_path(path))


def log(msg: str) -> None:
    click.echo(msg, err=True)
