"""A real store for the serve tests: the sample photos (task flowers, a logreg head) and a few BBC articles (task
news), embedded and fitted through the CLI, plus a live uvicorn server on 127.0.0.1 in a thread."""
import shutil
import socket
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from conftest import SAMPLE
from test_text import bbc_texts


def build_store(tmp_path_factory) -> Path:
    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("serve")
    store, texts = root / "store", root / "news"
    for cls, f in bbc_texts(3):
        (texts / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, texts / cls / f.name)
    for args in (["embed", str(SAMPLE)], ["embed", str(texts)], ["fit-head", "--task", "flowers", "--name", "fl"]):
        r = CliRunner().invoke(cli, [*args, "--store", str(store), *(["--no-progress"] if args[0] == "embed" else [])])
        assert r.exit_code == 0, r.output
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `state` on 127.0.0.1 in a thread of this process, until stop()."""

    def __init__(self, state):
        import uvicorn

        from featstore.serve.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
