"""The store: one folder holding a DuckDB file (items, labels, embedding sets, vectors, heads) and FAISS indexes.

DuckDB is the source of truth; the FAISS files beside it are caches that are rebuilt whenever they do not match
(see index.py). One writer at a time (a lock file naming the holder); readers open DuckDB read-only and get a
clear "being written" message while a writer holds the store.

Over 300 lines for a reason: the Store class is the one place where the SQL over items, labels, splits and
embedding sets lives, so a schema change is made in one file (its tables are in schema.py, the writer lock in
lock.py, the vector reads in vectors.py).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np

from featstore.errors import FeatstoreError, one_of
from featstore.store.columns import arrow_table
from featstore.store.filter_run import filter_connection, run_filter
from featstore.store.keys import check_new_hashes, upsert
from featstore.store.metadata import json_value, quote
from featstore.store.where_guard import ItemFilter, check_where
from featstore.store.vectors import VectorReads, vector_table
from featstore.store.lock import LOCK_FILE, describe_holder, take_writer_lock
from featstore.store.schema import ADDED_TABLES, FEATURE_FORMAT, SCHEMA, SCHEMA_VERSION, EmbeddingSet, Item

DB_FILE = "store.duckdb"
BULK_CHECKPOINT = "256MB"     # DuckDB's checkpoint threshold while a run appends vectors (its default: 16MB)
ROW_GROUP_ROWS = 2048         # rows per row group of what a writer adds (DuckDB's default: 122,880; see _connect)
BULK_VECTORS = 2 * ROW_GROUP_ROWS   # a write of this many vectors or more stores them uncompressed (write_batch)
INSERT_CHUNK_ROWS = 8 * ROW_GROUP_ROWS    # a vector insert's rows per thread's piece of work (_insert_vectors)


class Store(VectorReads):
    """An open store. Use Store.open(path, write=...) as a context manager."""

    row_group_rows: int | None = ROW_GROUP_ROWS      # None: DuckDB's default row group size

    def __init__(self, root: Path, con: duckdb.DuckDBPyConnection, writable: bool, lock_fd: int | None):
        self.root = root
        self.con = con
        self.writable = writable
        self._lock_fd = lock_fd
        self._filter_con: duckdb.DuckDBPyConnection | None = None
        self._compressing = True        # what compress_writes last set

    # ---- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, write: bool = False, wait: bool = False, create: bool = False) -> "Store":
        """Open the store at `root`: read-only, or as its one writer (`write`). Only `create` (with `write`: the
        commands that add items, i.e. embed) makes a store where there is none; everything else refuses."""
        root = Path(root)
        db = root / DB_FILE
        lock_fd = None
        cls.check_exists(root, may_create=write and create)
        if write:
            try:
                root.mkdir(parents=True, exist_ok=True)
                (root / "index").mkdir(exist_ok=True)
                lock_fd = take_writer_lock(root / LOCK_FILE, wait)
            except OSError as exc:
                raise FeatstoreError(f"{root}: cannot write the store ({exc.strerror or exc})") from None
        try:
            con = _connect(db, read_only=not write, root=root, row_group_rows=cls.row_group_rows)
            store = cls(root, con, write, lock_fd)
            store._check_schema()
            return store
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @staticmethod
    def check_exists(root: Path, may_create: bool = False) -> None:
        """One clear error unless `root` is a store folder (or, with may_create, a place to make one)."""
        if os.path.lexists(root) and not root.is_dir():
            raise FeatstoreError(f"{root}: not a store: it is a file, and a store is a folder (point --store / "
                                 "FEATSTORE_STORE at a store folder, or at a new one to create)")
        if not may_create and not (root / DB_FILE).exists():
            raise FeatstoreError(f"no featstore store at {root} (run `featstore embed FOLDER` first, "
                                 "or point --store / FEATSTORE_STORE at one)")

    def close(self) -> None:
        if self._filter_con is not None:
            self._filter_con.close()
            self._filter_con = None
        self.con.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_schema(self) -> None:
        has_meta = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchone()[0]
        if not has_meta:
            if not self.writable:
                raise FeatstoreError(f"{self.root}: store is empty")
            self.con.execute(SCHEMA)
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('generation', '0')",
                             [str(SCHEMA_VERSION)])
            return
        version = int(self.meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise FeatstoreError(f"{self.root}: store schema version {version} was written by a newer featstore "
                                 f"(this one reads up to {SCHEMA_VERSION}); upgrade featstore")
        if 1 <= version < SCHEMA_VERSION and self.writable:      # additive: the tables added since
            self.con.execute(SCHEMA)
            self.con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        elif version < 1:
            raise FeatstoreError(f"{self.root}: store schema version {version} is older than {SCHEMA_VERSION} "
                                 "and has no migration; re-embed into a new store")

    # ---- meta ----------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def generation(self) -> int:
        """Bumped by every write that changes which vectors are live; indexes record the one they reflect."""
        return int(self.meta("generation") or 0)

    def _bump_generation(self) -> None:
        self.con.execute("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) WHERE key = 'generation'")

    @contextmanager
    def transaction(self):
        self._require_write()
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    @contextmanager
    def bulk_writes(self):
        """While a run appends vectors: DuckDB folds its write-ahead log into the file (a checkpoint) once the log
        reaches BULK_CHECKPOINT rather than 16 MB. Each checkpoint rewrites the table's last, still-filling row
        group, so at 5 KB a vector the default rewrites the same rows again and again. Durability is unchanged:
        the log is synced at every commit and replayed at the next open after a crash. (A transaction that fills
        whole row groups, ROW_GROUP_ROWS rows, has them written straight into the file instead of the log.)
        DuckDB also runs on one thread meanwhile: a batch's statements are small, its parallel operators cost
        more than they save there, and the cores are the decoders' and the backbone's."""
        self._require_write()
        self.con.execute(f"SET checkpoint_threshold = '{BULK_CHECKPOINT}'")
        self.con.execute("SET threads = 1")
        try:
            yield
        finally:
            self.con.execute("RESET checkpoint_threshold")
            self.con.execute("RESET threads")
            self.con.execute("RESET force_compression")

    def compress_writes(self, on: bool) -> None:
        """Whether what is written from now on is compressed (DuckDB's default) or stored as is. DuckDB's float
        codecs store embeddings in about three quarters of the space and make writing vectors about twice as
        slow: write_batch turns them off during a bulk write (BULK_VECTORS vectors or more; the embed writer's
        groups are that when it is what the run waits on, see embed/write.py). Readers see no difference; a
        later checkpoint that rewrites a row group compresses it."""
        self.con.execute("RESET force_compression" if on else "SET force_compression = 'uncompressed'")
        self._compressing = on

    def _require_write(self) -> None:
        if not self.writable:
            raise RuntimeError("store opened read-only")

    # ---- embedding sets ------------------------------------------------------------------------------------
    def ensure_set(self, s: EmbeddingSet) -> None:
        self._require_write()
        if self.get_set(s.set_id):
            return
        with self.transaction():
            self.con.execute(f"CREATE TABLE {s.table} (vec_id BIGINT PRIMARY KEY, hash VARCHAR NOT NULL, "    # keys.py
                             f"vector FLOAT[{s.dim}] NOT NULL)")
            self.con.execute("INSERT INTO embedding_sets (set_id, model, dim, table_name, onnx_path, onnx_sha256, "
                             "preprocess, precision, provider, feature_format) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             [s.set_id, s.model, s.dim, s.table, s.onnx_path, s.onnx_sha256,
                              json.dumps(s.preprocess), s.precision, s.provider, FEATURE_FORMAT])

    def sets(self) -> list[EmbeddingSet]:
        rows = self.con.execute("SELECT set_id, model, dim, table_name, onnx_path, onnx_sha256, preprocess, "
                                "precision, provider FROM embedding_sets ORDER BY created_at").fetchall()
        return [EmbeddingSet(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8]) for r in rows]

    def get_set(self, set_id: str) -> EmbeddingSet | None:
        return next((s for s in self.sets() if s.set_id == set_id), None)

    def pick_set(self, model: str | None, modality: str | None = None) -> EmbeddingSet:
        """The embedding set to read: by model name, `name:precision` (e.g. efficientnet-lite0:int8) or set id;
        without one, the newest (of the modality)."""
        sets = [s for s in self.sets() if modality in (None, s.modality)]
        if not sets:
            raise FeatstoreError(f"{self.root}: nothing embedded yet"
                                 + (f" with a {modality} model" if modality else "") + " (run `featstore embed ...`)")
        if model is None:
            return sets[-1]
        matches = [s for s in sets if model in (s.model, s.set_id, f"{s.model}:{s.precision}")]
        if not matches:
            raise one_of("model", model, {s.model for s in sets} | {f"{s.model}:{s.precision}" for s in sets}
                         | {s.set_id for s in sets})
        return matches[-1]

    # ---- items ---------------------------------------------------------------------------------------------
    def items_by_path(self) -> dict[str, Item]:
        rows = self.con.execute("SELECT item_id, path, hash, size, mtime, status, error FROM items").fetchall()
        return {r[1]: Item(*r) for r in rows}

    def embedded_hashes(self, s: EmbeddingSet) -> set[str]:
        return {r[0] for r in self.con.execute(f"SELECT hash FROM {s.table}").fetchall()}

    def write_batch(self, s: EmbeddingSet, items: list[dict] | dict[str, Sequence], hashes: list[str],
                    vectors: np.ndarray | None, texts: list[tuple] | None = None) -> None:
        """One atomic write: new vectors for `hashes` plus the item rows (ok or failed) they belong to, and for
        text, the texts themselves (hash, text, tokens, truncated). `items`: one dict per row, or the rows as
        columns {"path": [...], "width": array, ...} (ITEM_COLUMNS; a column left out is NULL), which a bulk load
        builds faster. A bulk write (BULK_VECTORS vectors or more) is stored uncompressed (compress_writes),
        everything else as DuckDB chooses."""
        plain = vectors is not None and self._compressing and len(hashes) >= BULK_VECTORS
        if plain:                       # until the commit, which writes the last row groups to the file
            self.compress_writes(False)
        try:
            with self.transaction():
                if texts:
                    cols = list(zip(*texts))
                    self.con.execute("INSERT INTO texts SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), "
                                     "unnest($3::INTEGER[]), unnest($4::BOOLEAN[]) ON CONFLICT DO NOTHING",
                                     [list(c) for c in cols])
                if vectors is not None and len(hashes):
                    self._insert_vectors(s, hashes, vectors)
                cols = item_columns(items)
                if len(cols["path"][1]):
                    self._upsert_item_columns(cols)
                    copies = _copies(cols) if s.modality == "image" else []
                    if copies:
                        self.fill_copy_sizes("(SELECT unnest($1::VARCHAR[]))", [copies])
                self._bump_generation()
        finally:
            if plain:
                self.compress_writes(True)

    def _insert_vectors(self, s: EmbeddingSet, hashes: list[str], vectors: np.ndarray) -> None:
        """Append vectors with the next vec_ids (in `hashes` order), matrix and hashes as one Arrow table
        (vector_table) in pieces of INSERT_CHUNK_ROWS: DuckDB's threads (as many as the connection's `threads`
        setting; one during an embed run, see bulk_writes) append pieces side by side, in order."""
        self.con.register("_new_vectors", vector_table(vectors, hashes, chunk_rows=INSERT_CHUNK_ROWS))
        try:
            check_new_hashes(self.con, s.table, "_new_vectors")
            self.con.execute(f"""INSERT INTO {s.table} SELECT (SELECT coalesce(max(vec_id), 0) FROM {s.table}) + r + 1,
                hash, vector FROM _new_vectors""")
        finally:
            self.con.unregister("_new_vectors")

    def record_run(self, s: EmbeddingSet, source: str, started_at: float, config: dict, summary: dict) -> None:
        """What an embed run did and with which settings (device, providers, threads, batch size, stage times)."""
        import datetime

        with self.transaction():
            self.con.execute("INSERT INTO runs (started_at, set_id, source, config, summary) VALUES (?,?,?,?,?)",
                             [datetime.datetime.fromtimestamp(started_at), s.set_id, source,
                              json.dumps(config), json.dumps(summary)])

    def runs(self, limit: int = 10) -> list[dict]:
        rows = self.con.execute(f"SELECT run_id, started_at, set_id, source, config, summary FROM "
                                f"{self.relation('runs')} ORDER BY run_id DESC LIMIT ?", [limit]).fetchall()
        return [{"run_id": r[0], "started_at": str(r[1]), "set_id": r[2], "source": r[3],
                 "config": json.loads(r[4]), "summary": json.loads(r[5])} for r in rows]

    def upsert_items(self, items: list[dict] | dict[str, Sequence]) -> None:
        """Insert or update item rows (as write_batch takes them) by path, in one statement over the rows as one
        Arrow table (columns.py); the paths are kept unique by keys.upsert."""
        self._upsert_item_columns(item_columns(items))

    def _upsert_item_columns(self, columns: dict[str, tuple[str, Sequence]]) -> None:
        self.con.register("_new_items", arrow_table(columns))
        try:
            upsert(self.con, "items", ("path",), list(ITEM_COLUMNS), "_new_items", touch="updated_at")
        finally:
            self.con.unregister("_new_items")

    def fill_copy_sizes(self, paths_sql: str, params: list | None = None) -> None:
        """Items among `paths_sql` recorded without decoding (their content was already stored) get the width and
        height recorded for that content (both from one item, the first by path), so an item's record does not
        depend on what was stored before it."""
        self.con.execute(f"""UPDATE items SET width = o.width, height = o.height
            FROM (SELECT DISTINCT ON (hash) hash, width, height FROM items
                  WHERE width IS NOT NULL AND hash IN (SELECT hash FROM items WHERE path IN {paths_sql})
                  ORDER BY hash, path) o
            WHERE items.path IN {paths_sql} AND items.status = 'ok' AND items.width IS NULL
              AND items.hash = o.hash""", params or [])

    def set_labels(self, task: str, labels: dict[str, str]) -> None:
        """Replace a task's labels for these paths, in one statement over them as one Arrow table."""
        if not labels:
            return
        new = arrow_table({"path": ("VARCHAR", list(labels)), "label": ("VARCHAR", list(labels.values()))})
        with self.transaction():
            self.con.register("_new_labels", new)
            try:
                upsert(self.con, "labels", ("task", "path"), ["task", "path", "label"],
                       "(SELECT $1 AS task, path, label FROM _new_labels)", [task])
            finally:
                self.con.unregister("_new_labels")

    def tasks(self) -> dict[str, int]:
        """Task -> labels of items not removed (vanished from their source: kept for history, not counted)."""
        return dict(self.con.execute(
            "SELECT l.task, count(*) FILTER (WHERE i.status IS DISTINCT FROM 'removed') FROM labels l "
            "LEFT JOIN items i ON i.path = l.path GROUP BY l.task ORDER BY l.task").fetchall())

    def relation(self, table: str) -> str:
        """A table added since schema 1, or, in an older store opened read-only (not migrated), an empty stand-in
        with the same columns, so queries need no second form."""
        if self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchone()[0]:
            return table
        return "(SELECT " + ", ".join(f"NULL AS {c}" for c in ADDED_TABLES[table]) + " WHERE false)"

    def metadata_columns(self) -> dict[str, str]:
        """The user's metadata columns (store/metadata.py), in the order they were added: name -> DuckDB type."""
        if self.relation("item_meta") != "item_meta":
            return {}
        return dict(self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'item_meta' "
            "AND column_name <> 'path' ORDER BY ordinal_position").fetchall())

    def meta_by_path(self, paths: list[str]) -> dict[str, dict]:
        """path -> its metadata {column: value} (JSON-ready; None where not given) for these paths; {} in a store
        without metadata columns."""
        cols = list(self.metadata_columns())
        if not cols:
            return {}
        rows = self.con.execute(f"SELECT path, {', '.join(map(quote, cols))} FROM item_meta "
                                "WHERE path IN (SELECT unnest($1::VARCHAR[]))", [list(paths)]).fetchall()
        found = {r[0]: meta_dict(cols, r[1:]) for r in rows}
        return {p: found.get(p) or dict.fromkeys(cols) for p in paths}

    def item_view(self, only_hashes: bool = False) -> str:
        """SQL for one row per ok item with the label and split of the task bound as $task, and its text:
        item_id, path, hash, size, mtime, width, height, updated_at, label, split, text, then the store's metadata
        columns (what --where reads). `only_hashes`: only the items holding the contents bound as $hashes (a
        VARCHAR list)."""
        meta = list(self.metadata_columns())
        return f"""SELECT i.item_id, i.path, i.hash, i.size, i.mtime, i.width, i.height, i.updated_at,
                          l.label, sp.split, t.text{"".join(f", m.{quote(c)}" for c in meta)}
                   FROM items i LEFT JOIN labels l ON l.path = i.path AND l.task = $task
                   LEFT JOIN {self.relation("splits")} sp ON sp.hash = i.hash AND sp.task = $task
                   LEFT JOIN {self.relation("texts")} t ON t.hash = i.hash
                   {"LEFT JOIN item_meta m ON m.path = i.path" if meta else ""}
                   WHERE i.status = 'ok'""" + (" AND i.hash IN (SELECT unnest($hashes::VARCHAR[]))"
                                               if only_hashes else "")

    def passing(self, key: tuple, read) -> np.ndarray:
        """The vec_ids passing a condition, by `read` (a CachedStore keeps recent ones by `key`)."""
        return read()

    @property
    def filter_con(self) -> duckdb.DuckDBPyConnection:
        """The connection `--where` conditions run on (see filter_run.py), opened on first use."""
        if self._filter_con is None:
            if self.writable:
                raise FeatstoreError("a --where filter runs on a store opened for reading")
            self._filter_con = filter_connection(self.root / DB_FILE)
        return self._filter_con

    def passing_rows(self, where: ItemFilter | str, task: str | None, sql: str, params: dict | None = None,
                     fetch=None):
        """Run `sql`, in which {items} stands for the ok items passing `where` (the item view's columns), on the
        filter connection within its bounds (see filter_run.py)."""
        where = check_where(where, self.metadata_columns())
        tags = self.relation("tags") if "tag" in where.columns else "tags"
        no_tags = "" if tags == "tags" else f"WITH tags AS {tags} "      # an older store, not written since
        items = f"({no_tags}SELECT * FROM ({self.item_view()}) AS item WHERE {where.sql})"
        return run_filter(self.filter_con, where, sql.format(items=items), {"task": task} | (params or {}), fetch)

    def split_of(self, task: str) -> dict[str, str]:
        """A task's stored held-out split: content hash -> 'train' | 'test' (empty before the first fit-head)."""
        return dict(self.con.execute(f"SELECT hash, split FROM {self.relation('splits')} WHERE task = ?",
                                     [task]).fetchall())

    def add_split(self, task: str, assignments: dict[str, str]) -> None:
        """Record split assignments for contents not assigned yet (existing ones never change)."""
        if not assignments:
            return
        with self.transaction():
            self.con.execute("INSERT INTO splits SELECT $1, unnest($2::VARCHAR[]), unnest($3::VARCHAR[]) "
                             "ON CONFLICT DO NOTHING", [task, list(assignments), list(assignments.values())])

    def labelled_count(self, s: EmbeddingSet, task: str) -> int:
        """How many of a task's labelled contents have a vector in this set."""
        return self.con.execute(
            f"""SELECT count(DISTINCT e.hash) FROM labels l JOIN items i ON i.path = l.path AND i.status = 'ok'
                JOIN {s.table} e ON e.hash = i.hash WHERE l.task = ?""", [task]).fetchone()[0]

    def set_for_task(self, task: str, model: str | None) -> EmbeddingSet:
        """The set to fit a task on: the one asked for, else the newest holding vectors for the task's items."""
        if model is None:
            for s in reversed(self.sets()):
                if self.labelled_count(s, task):
                    return s
        return self.pick_set(model)

    def labelled(self, s: EmbeddingSet, task: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(hashes, vectors, labels) of a task, one row per distinct content (duplicates counted once); items
        excluded by curation (store/edits.py) are left out."""
        if task not in self.tasks():
            raise one_of("task", task, self.tasks())
        rows = self.con.execute(
            f"""SELECT e.hash, e.vector, min(l.label) AS label, count(DISTINCT l.label) AS n_labels
                FROM labels l JOIN items i ON i.path = l.path AND i.status = 'ok'
                JOIN {s.table} e ON e.hash = i.hash
                WHERE l.task = ? AND l.path NOT IN (SELECT path FROM {self.relation("exclusions")})
                GROUP BY e.hash, e.vector ORDER BY e.hash""", [task]).fetchall()
        conflicting = sum(1 for r in rows if r[3] > 1)
        if conflicting:
            print(f"warning: {conflicting} identical images carry different {task!r} labels; "
                  "the first label (alphabetically) is used", file=sys.stderr)
        if not rows:
            raise FeatstoreError(f"task {task!r} has no embedded items for model {s.model}")
        hashes = [r[0] for r in rows]
        vectors = np.asarray([r[1] for r in rows], dtype=np.float32).reshape(len(rows), s.dim)
        return hashes, vectors, np.asarray([r[2] for r in rows], dtype=object)

    def describe_vecs(self, s: EmbeddingSet, vec_ids: list[int], task: str | None) -> dict[int, dict]:
        """For result vec_ids: one item holding that content (the first by path), so its id, path and label all
        come from that one item; how many ok paths share the content; for text the text itself; and in a store
        with metadata columns, that item's `meta` {column: value}. (A filtered search swaps in the first item
        that passes its condition: search/query.py.)"""
        if not vec_ids:
            return {}
        ids = list(map(int, vec_ids))
        hashes = dict(self.con.execute(f"SELECT vec_id, hash FROM {s.table} WHERE vec_id IN (SELECT unnest($1))",
                                       [ids]).fetchall())
        if not hashes:
            return {}
        meta = list(self.metadata_columns())
        outer, inner = "".join(f", {quote(c)}" for c in meta), "".join(f", item.{quote(c)}" for c in meta)
        rows = self.con.execute(
            f"""SELECT vec_id, item_id, path, copies, label, hash, text{outer} FROM (
                  SELECT e.vec_id, item.item_id, item.path, item.label, e.hash, item.text{inner},
                         count(*) OVER (PARTITION BY e.vec_id) AS copies
                  FROM (SELECT unnest($vec_ids) AS vec_id, unnest($hashes) AS hash) e
                  JOIN ({self.item_view(only_hashes=True)}) AS item ON item.hash = e.hash)
                QUALIFY row_number() OVER (PARTITION BY vec_id ORDER BY path) = 1""",
            {"task": task, "vec_ids": list(hashes), "hashes": list(hashes.values())}).fetchall()
        return {r[0]: {"item_id": r[1], "path": r[2], "copies": r[3], "label": r[4], "hash": r[5], "text": r[6]}
                | ({"meta": meta_dict(meta, r[7:])} if meta else {}) for r in rows}

    def item(self, item_id: int) -> Item:
        row = self.con.execute("SELECT item_id, path, hash, size, mtime, status, error FROM items WHERE item_id = ?",
                               [item_id]).fetchone()
        if not row:
            raise FeatstoreError(f"no item with id {item_id} in {self.root}")
        return Item(*row)

    def page_items(self, task: str | None, where: ItemFilter | str | None, offset: int,
                   limit: int) -> tuple[int, list[dict]]:
        """(how many ok items pass `where`, one page of them by item_id) from the item view (what --where reads)."""
        page = "SELECT * FROM {items} AS item ORDER BY item_id LIMIT $limit OFFSET $offset"
        params = {"limit": limit, "offset": offset}
        if where is None:
            items = f"({self.item_view()})"
            total = self.con.execute(f"SELECT count(*) FROM {items}", {"task": task}).fetchone()[0]
            cur = self.con.execute(page.format(items=items), {"task": task} | params)
            cols, rows = [d[0] for d in cur.description], cur.fetchall()
        else:
            total = self.passing_rows(where, task, "SELECT count(*) FROM {items}")[0][0]
            cols, rows = self.passing_rows(where, task, page, params,
                                           fetch=lambda cur: ([d[0] for d in cur.description], cur.fetchall()))
        return total, [dict(zip(cols, r)) for r in rows]

    def labels_of(self, path: str) -> dict[str, str]:
        """Every task's label for one path."""
        return dict(self.con.execute("SELECT task, label FROM labels WHERE path = ? ORDER BY task", [path]).fetchall())


ITEM_COLUMNS = {"path": "VARCHAR", "hash": "VARCHAR", "size": "BIGINT", "mtime": "DOUBLE", "width": "INTEGER",
                "height": "INTEGER", "status": "VARCHAR", "error": "VARCHAR"}     # what a writer gives of an item


def item_columns(items: list[dict] | dict[str, Sequence]) -> dict[str, tuple[str, Sequence]]:
    """Item rows, given as dicts or as columns, as {column: (DuckDB type, values)} (columns.arrow_table's
    input); a column not given is NULL."""
    if isinstance(items, Mapping):
        unknown = set(items) - set(ITEM_COLUMNS)
        if unknown or "path" not in items:
            raise FeatstoreError(f"item columns: {', '.join(sorted(unknown)) + ' unknown' if unknown else 'no path'} "
                                 f"(the columns: {', '.join(ITEM_COLUMNS)})")
        lengths = {c: len(v) for c, v in items.items()}
        if len(set(lengths.values())) > 1:
            raise FeatstoreError(f"item columns of different lengths: {lengths}")
        n = len(items["path"])
        return {c: (t, items[c] if c in items else [None] * n) for c, t in ITEM_COLUMNS.items()}
    return {c: (t, [it.get(c) for it in items]) for c, t in ITEM_COLUMNS.items()}


def _copies(cols: dict[str, tuple[str, Sequence]]) -> list[str]:
    """Paths of ok items given without a width (recorded without decoding: see Store.fill_copy_sizes)."""
    width = cols["width"][1]
    if isinstance(width, np.ndarray) and width.dtype != object:
        return []                                     # a numeric array holds no NULL
    return [p for p, st, w in zip(cols["path"][1], cols["status"][1], width) if st == "ok" and w is None]


def meta_dict(columns: list[str], values) -> dict:
    """{column: value} of one item's metadata, JSON-ready."""
    return {c: json_value(v) for c, v in zip(columns, values)}


READER_GRACE_S = 10.0     # a writer that finds a reader's file lock retries this long (readers hold it briefly)


def _connect(db: Path, read_only: bool, root: Path, row_group_rows: int | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB's connection to the store's file. A writer attaches the file with row groups of `row_group_rows`
    (a setting of the attachment, not of the file; rows written before keep their row groups): a transaction
    that fills a row group has it written to the file at once, not through the write-ahead log and a checkpoint
    later, so a run's vectors are written once rather than twice."""
    import time

    def attempt() -> duckdb.DuckDBPyConnection:
        if read_only or not row_group_rows:
            return duckdb.connect(str(db), read_only=read_only)
        con = duckdb.connect()
        try:
            con.execute(f"ATTACH '{_sql_string(db)}' AS store (ROW_GROUP_SIZE {int(row_group_rows)})")
            con.execute("USE store")
        except BaseException:
            con.close()
            raise
        return con

    deadline = time.monotonic() + (0 if read_only else READER_GRACE_S)
    while True:
        try:
            return attempt()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                break
        time.sleep(0.05)
    try:
        return attempt()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            holder = describe_holder(root / LOCK_FILE)
            raise FeatstoreError(f"store {root} is being written{holder}; try again when it finishes") from None
        raise FeatstoreError(f"{db}: cannot open store ({str(exc).splitlines()[0]})") from None


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")
