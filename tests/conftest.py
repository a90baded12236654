"""Shared fixtures: a featstore home with the default backbone exported once per test session, real photos."""
import contextlib
import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

# scikit-learn's array-API estimator checks (tests/test_fix_estimators.py) run only with this set, and scipy reads
# it once, at its first import: so here, before any test module imports scipy
os.environ.setdefault("SCIPY_ARRAY_API", "1")

SAMPLE = Path(__file__).parent / "data" / "flowers"


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """FEATSTORE_HOME for the whole session, with efficientnet-lite0 exported (and parity-checked) into it."""
    path = tmp_path_factory.mktemp("featstore-home")
    old = os.environ.get("FEATSTORE_HOME")
    os.environ["FEATSTORE_HOME"] = str(path)
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported

    ensure_exported(resolve(None), log=lambda *_: None)
    yield path
    if old is None:
        os.environ.pop("FEATSTORE_HOME", None)
    else:
        os.environ["FEATSTORE_HOME"] = old


def cli_runner():
    """A function running the featstore CLI in-process: run(*args, ok=True) -> the click Result (ok: assert the
    exit code is 0)."""
    from featstore.cli.main import cli

    def _run(*args, ok=True):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return _run


@pytest.fixture
def run(home):
    """Run the featstore CLI in-process; returns the click Result (asserting on the exit code is up to the test)."""
    return cli_runner()


def embed_into_new_store(tmp_path_factory, name: str, folder: Path = SAMPLE) -> Path:
    """A fresh store holding `folder` embedded once (for module-scoped fixtures; needs the `home` fixture)."""
    from featstore.cli.main import cli

    store = tmp_path_factory.mktemp(name) / "store"
    r = CliRunner().invoke(cli, ["embed", str(folder), "--store", str(store), "--no-progress"])
    assert r.exit_code == 0, r.output
    return store


def query(store: Path, sql: str) -> list[tuple]:
    """Rows of a SQL query against a store's DuckDB file, opened read-only (the test looks, featstore aside)."""
    import duckdb

    con = duckdb.connect(str(store / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def sample_images(per_class: int = 20) -> list[Path]:
    return [p for c in sorted(SAMPLE.iterdir()) if c.is_dir() for p in sorted(c.glob("*.jpg"))[:per_class]]


@pytest.fixture
def small_folder(tmp_path):
    """A labelled folder of real photos: 8 per class, 5 classes (copied from the bundled sample)."""
    root = tmp_path / "flowers"
    for p in sample_images(8):
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / p.parent.name / p.name)
    return root


@contextlib.contextmanager
def network_blocked():
    """Any connection attempt raises while inside: nothing may reach the hub (or anything else)."""
    def refuse(*_args, **_kwargs):
        raise OSError("network blocked in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@contextlib.contextmanager
def private_homes(path: Path):
    """FEATSTORE_HOME and an empty Hugging Face cache under `path` while inside (a module's imported models stay
    out of the other tests' catalogue); the featstore home is what it yields."""
    from huggingface_hub import constants

    saved = {k: os.environ.get(k) for k in ("FEATSTORE_HOME", "HF_HOME", "HF_HUB_CACHE")}
    os.environ.update(FEATSTORE_HOME=str(path / "featstore"), HF_HOME=str(path / "hf"),
                      HF_HUB_CACHE=str(path / "hf" / "hub"))
    try:
        with pytest.MonkeyPatch.context() as mp:      # read once at import, which an earlier test may have done
            mp.setattr(constants, "HF_HUB_CACHE", str(path / "hf" / "hub"))
            yield path / "featstore"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
