"""What a search reads to find its query and describe its neighbours, held in memory for a store copy that never
changes (the server's snapshot): the item records by id; per content hash, the item that stands for it (the first
ok item by path) and how many ok items share it; per embedding set, vec_id <-> content hash; per task, the labels
by path; the user's metadata by path (store/metadata.py). Each part is read from DuckDB in one query over its whole table the first time it is needed, so a plain
search over the copy (no --where) runs no SQL for its items. Memory: roughly 1 KB per item.

Texts are not held (they can be long): a result whose content is a text reads it with one lookup by hash.
"""
from __future__ import annotations

import threading

import numpy as np

from featstore.store.metadata import json_value, quote
from featstore.store.schema import EmbeddingSet, Item


class Catalog:
    """The parts above for one unchanging DuckDB file, read through whatever connection the caller passes."""

    def __init__(self):
        self._parts: dict = {}
        self._lock = threading.Lock()

    def _part(self, key, read):
        part = self._parts.get(key)
        if part is None:
            with self._lock:              # concurrent first requests read it once, not once each
                part = self._parts.get(key)
                if part is None:
                    part = self._parts[key] = read()
        return part

    def items(self, con) -> dict[int, tuple]:
        """item_id -> (item_id, path, hash, size, mtime, status, error), every status."""
        def read():
            rows = con.execute("SELECT item_id, path, hash, size, mtime, status, error FROM items").fetchall()
            return {r[0]: r for r in rows}
        return self._part("items", read)

    def item(self, con, item_id: int) -> Item | None:
        row = self.items(con).get(item_id)
        return Item(*row) if row is not None else None

    def standing_for(self, con) -> dict[str, tuple[int, str, int]]:
        """Content hash -> (item_id, path, copies) of the first ok item by path holding it, and how many do."""
        def read():
            rows = con.execute("SELECT hash, arg_min(item_id, path), min(path), count(*) FROM items "
                               "WHERE status = 'ok' AND hash IS NOT NULL GROUP BY hash").fetchall()
            return {r[0]: (r[1], r[2], r[3]) for r in rows}
        return self._part("standing_for", read)

    def vec_hashes(self, con, s: EmbeddingSet) -> dict[int, str]:
        """vec_id -> content hash of every vector of the set."""
        return self._vec_maps(con, s)[0]

    def hash_vec_ids(self, con, s: EmbeddingSet) -> dict[str, int]:
        """content hash -> vec_id of every vector of the set."""
        return self._vec_maps(con, s)[1]

    def _vec_maps(self, con, s: EmbeddingSet):
        def read():
            rows = con.execute(f"SELECT vec_id, hash FROM {s.table}").fetchnumpy()
            ids, hashes = np.asarray(rows["vec_id"], np.int64).tolist(), list(rows["hash"])
            return dict(zip(ids, hashes)), dict(zip(hashes, ids))
        return self._part(("vectors", s.set_id), read)

    def labels(self, con, task: str | None) -> dict[str, str]:
        """path -> label in the task (empty without a task)."""
        if task is None:
            return {}
        return self._part(("labels", task), lambda: dict(
            con.execute("SELECT path, label FROM labels WHERE task = ?", [task]).fetchall()))

    def metadata(self, con, columns: list[str]) -> dict[str, dict]:
        """path -> {column: value} (JSON-ready) of the items with metadata (empty without metadata columns)."""
        if not columns:
            return {}

        def read():
            rows = con.execute(f"SELECT path, {', '.join(map(quote, columns))} FROM item_meta").fetchall()
            return {r[0]: {c: json_value(v) for c, v in zip(columns, r[1:])} for r in rows}
        return self._part(("metadata", tuple(columns)), read)

    def text_hashes(self, con, texts_relation: str) -> frozenset:
        """The content hashes that are texts (their texts stay in DuckDB)."""
        return self._part("text_hashes", lambda: frozenset(
            r[0] for r in con.execute(f"SELECT hash FROM {texts_relation}").fetchall()))

    def describe(self, con, s: EmbeddingSet, vec_ids, task: str | None, texts_relation: str,
                 meta_columns: list[str] = ()) -> dict[int, dict]:
        """As Store.describe_vecs without a --where: for each vec_id whose content some ok item holds, that
        content's standing item (id, path, label in `task`), its copies, hash and text, and with `meta_columns`
        its metadata."""
        hashes, standing = self.vec_hashes(con, s), self.standing_for(con)
        labels = self.labels(con, task)
        found = {}
        for vid in map(int, vec_ids):
            h = hashes.get(vid)
            if h is not None and h in standing:
                found[vid] = h
        is_text = self.text_hashes(con, texts_relation)
        wanted = [h for h in found.values() if h in is_text]
        texts = dict(con.execute(f"SELECT hash, text FROM {texts_relation} WHERE hash IN (SELECT unnest($1))",
                                 [wanted]).fetchall()) if wanted else {}
        meta, blank = self.metadata(con, list(meta_columns)), dict.fromkeys(meta_columns)
        out = {}
        for vid, h in found.items():
            item_id, path, copies = standing[h]
            out[vid] = {"item_id": item_id, "path": path, "copies": copies, "label": labels.get(path), "hash": h,
                        "text": texts.get(h)} | ({"meta": dict(meta.get(path, blank))} if meta_columns else {})
        return out

    def warm(self, con, sets: list[EmbeddingSet], tasks, texts_relation: str, meta_columns: list[str] = ()) -> None:
        """Read every part now (a new snapshot does this before it is served, so no request waits for it)."""
        self.items(con)
        self.metadata(con, list(meta_columns))
        self.standing_for(con)
        self.text_hashes(con, texts_relation)
        for s in sets:
            self._vec_maps(con, s)
        for task in tasks:
            self.labels(con, task)
