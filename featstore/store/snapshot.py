"""A snapshot of a store for a long-running reader (the web server): a private copy of the DuckDB file taken while
no writer holds the store, opened read-only with external access off (and one thread per query: a server runs
many small queries side by side), plus each set's FAISS index in memory.

A reader that kept the store's own file open would lock every writer out (DuckDB lets one process write, and only
when nobody reads); one that opened it per request would fail while an `embed` runs. A snapshot does neither: the
store is opened only for the moment of the copy, and the copy answers queries while a writer works on the store.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from featstore.errors import FeatstoreError
from featstore.store.cached import CachedStore
from featstore.store.catalog import Catalog
from featstore.store.db import DB_FILE, Store
from featstore.store.filter_run import filter_connection, filter_cursor
from featstore.store.index import open_index, read_stamp


def signature(root: Path) -> tuple:
    """What changes whenever a writer commits: size and mtime of the DuckDB file and its write-ahead log."""
    out = []
    for name in (DB_FILE, DB_FILE + ".wal"):
        try:
            st = os.stat(Path(root) / name)
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


@dataclass
class Snapshot:
    """The store as it was at `taken_at` (its generation), answering reads through cursors on a read-only copy."""

    root: Path                       # the store's own folder (thumbnails, item files are found from it)
    copy: Path                       # the folder holding the private copy
    con: duckdb.DuckDBPyConnection
    filter_con: duckdb.DuckDBPyConnection       # where --where conditions run (see filter_run.py)
    generation: int
    signature: tuple
    taken_at: float
    indexes: dict = field(default_factory=dict)      # set_id -> faiss index, loaded once; ("kind"/"cpu", set_id)

    memo: dict = field(default_factory=dict)        # answers that cannot change in a copy (sets, tasks, tables)
    catalog: Catalog = field(default_factory=Catalog)      # items, hashes and labels searches read, in memory

    def reader(self) -> Store:
        """A Store over the copy for one request (its own cursor; close it when done)."""
        store = CachedStore(self.copy, self.con.cursor(), False, None, self.memo, self.catalog)
        store._filter_con = filter_cursor(self.filter_con)
        return store

    def warm(self) -> None:
        """Read what searches keep in memory now, before the snapshot is served."""
        with contextlib.closing(self.reader()) as store:
            store.warm()

    def close(self) -> None:
        self.filter_con.close()
        self.con.close()
        shutil.rmtree(self.copy, ignore_errors=True)


def take(root: str | Path, workdir: str | Path | None = None) -> Snapshot:
    """Copy the store at `root` (raises FeatstoreError while a writer holds it, as any reader does)."""
    root = Path(root)
    sig = signature(root)
    copy = Path(tempfile.mkdtemp(prefix="featstore-snapshot-", dir=workdir))
    try:
        with Store.open(root) as store:            # read-only: while it is open no writer can commit
            generation = store.generation()
            indexes = {s.set_id: open_index(store, s) for s in store.sets()}
            for s in store.sets():      # the kind (the copy has no stamps) and the CPU index filters use
                kind = indexes[("kind", s.set_id)] = (read_stamp(store, s) or {}).get("kind", "flat")
                indexes[("cpu", s.set_id)] = indexes[s.set_id], kind
            shutil.copy2(root / DB_FILE, copy / DB_FILE)
            if (root / (DB_FILE + ".wal")).exists():
                shutil.copy2(root / (DB_FILE + ".wal"), copy / (DB_FILE + ".wal"))
        _add_lookup_indexes(copy / DB_FILE)
        con = duckdb.connect(str(copy / DB_FILE), read_only=True, config={
            "enable_external_access": False, "autoload_known_extensions": False,
            "autoinstall_known_extensions": False, "lock_configuration": True, "threads": 1})
        filter_con = filter_connection(copy / DB_FILE)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return Snapshot(root, copy, con, filter_con, generation, sig, time.time(), indexes)


def _add_lookup_indexes(db: Path) -> None:
    """Indexes the store itself does without, on the private copy only: results are described by content hash,
    which the items table is otherwise scanned for on every request."""
    con = duckdb.connect(str(db))
    try:
        con.execute("CREATE INDEX IF NOT EXISTS snapshot_items_hash ON items (hash)")
    finally:
        con.close()


def try_take(root: str | Path, workdir=None) -> tuple[Snapshot | None, str | None]:
    """(snapshot, None), or (None, why not) while the store is being written or cannot be read."""
    try:
        return take(root, workdir), None
    except FeatstoreError as exc:
        return None, str(exc)
