"""Running the app: one uvicorn process over one store, bound to 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.store.db import Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def check_installed() -> None:
    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise FeatstoreError(f"featstore serve needs {', '.join(missing)}: pip install 'featstore[serve]'")


def serve(root: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, read_only: bool = False,
          allowed_hosts: tuple[str, ...] = (), log=print) -> None:
    """Serve the store at `root` until interrupted (Ctrl-C), answering requests addressed to a loopback name, the
    bound address or one of `allowed_hosts` (the names a proxy or another machine uses to reach it)."""
    Store.check_exists(Path(root))
    check_installed()
    import uvicorn

    from featstore.serve.app import create_app
    from featstore.serve.guard import allowed_hosts as names
    from featstore.serve.state import ServerState

    state = ServerState(root, read_only=read_only)
    _exit_on_sigterm()
    try:
        log(f"serving {root} (generation {state.snapshot.generation}) on http://{host}:{port}/  "
            f"API schema: /docs, /openapi.json; Ctrl-C stops")
        uvicorn.run(create_app(state, names(host, allowed_hosts)), host=host, port=port, log_level="warning", access_log=False)
    finally:
        state.close()


def _exit_on_sigterm() -> None:
    """uvicorn re-raises the SIGTERM it caught once it has shut down; make that an exit that runs `finally`
    blocks (the snapshot's temporary copy is removed) instead of the default handler's instant death."""
    import signal
    import sys
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
