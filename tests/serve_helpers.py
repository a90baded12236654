"""A real store for the serve tests: the sample photos (task flowers, a logreg head) and a few BBC articles (task
news), embedded and fitted through the CLI, plus a live uvicorn server on 127.0.0.1 in a thread."""
import socket
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from conftest import SAMPLE
from test_text import bbc_labelled_folder


def build_store(tmp_path_factory) -> Path:
    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("serve")
    store, texts = root / "store", bbc_labelled_folder(root / "news", 3)
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


def synthetic_store(root: Path, n: int, dim: int = 16, classes: int = 8, seed: int = 0) -> Path:
    """A store of `n` seeded clustered vectors of `dim` (the default backbone's set record, its dimension
    replaced), each under a made-up path, labelled by cluster in task 'synthetic'. For the map at scale: inserting
    100,000 x 1280 vectors takes minutes here; the map only reads the set's 2-D projection."""
    import dataclasses

    import numpy as np

    from featstore.embed.backbones import set_for
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported
    from featstore.store.db import Store

    spec = resolve(None)
    real = set_for(spec, Path(ensure_exported(spec, log=lambda *_: None)), "cpu")
    s = dataclasses.replace(real, set_id=f"synthetic{dim}", dim=dim, table=f"vectors_synthetic{dim}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32) * 3
    cluster = rng.integers(0, classes, n)
    vectors = (centres[cluster] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)
    hashes = [f"{i:032x}" for i in range(n)]
    with Store.open(root, write=True, create=True) as st:
        st.ensure_set(s)
        for start in range(0, n, 50_000):
            part = range(start, min(start + 50_000, n))
            items = [{"path": f"/synthetic/c{cluster[i]}/{i}.jpg", "hash": hashes[i], "size": 1, "mtime": 0.0,
                      "width": 1, "height": 1, "status": "ok", "error": None} for i in part]
            st.write_batch(s, items, [hashes[i] for i in part], vectors[part.start:part.stop])
        st.set_labels("synthetic", {f"/synthetic/c{cluster[i]}/{i}.jpg": f"c{cluster[i]}" for i in range(n)})
    return root
