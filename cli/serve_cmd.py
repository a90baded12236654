"""`featstore serve`: the local web app and REST API over a store."""
from __future__ import annotations

import click

from .common import log, store_option
from .common import store_path as resolve_store


@click.command("serve")
@store_option
@click.option("--host", default="127.0.0.1", help="Address to bind (0.0.0.0 exposes the store to the network).")
@click.option("--port", default=8765, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--read-only", is_flag=True, help="Write nothing into the store folder (thumbnails and maps are "
                                                "cached in a temporary folder instead).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another name requests may address the server by (a proxy's, this machine's on the network); "
                   "loopback names and the --host address are always answered. Repeatable.")
def serve(store_path, host, port, read_only, allowed_hosts):
    """Browse and search the store in a web browser, and serve search and predict over HTTP (JSON)."""
    from featstore.serve.server import serve as run

    run(resolve_store(store_path), host=host, port=port, read_only=read_only, allowed_hosts=allowed_hosts, log=log)
