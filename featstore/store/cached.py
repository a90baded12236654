"""A Store for repeated reads of a DuckDB file that does not change while they run: a read-only store (while a reader
has it open no writer can commit) or the server's snapshot copy. What every search reads besides FAISS is read
once and kept in `memo` and `catalog`, which the caller may keep across Store instances for as long as the file
is unchanged (the server per snapshot, the Python API per store generation): the embedding sets, the tasks, the
table checks, each set's live count, the vec_ids passing a recent --where, and, in the Catalog, the item records,
vec_id <-> hash maps and labels that describe a search's neighbours without SQL.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store.catalog import Catalog
from featstore.store.db import Store

RECENT_FILTERS = 16          # passing sets kept per memo (the newest conditions)
CATALOG_AFTER = 6            # search lookups (item, vector, neighbours) answered from DuckDB before the catalog


class CachedStore(Store):
    """A read-only Store whose reads are kept in `memo` and `catalog` (see the module's docstring). The catalog
    (every item read once) is used from the CATALOG_AFTER-th search lookup on, or at once when warmed: a one-shot
    reader answers its few lookups from DuckDB, which costs less than reading every item."""

    def __init__(self, root, con, writable, lock_fd, memo: dict | None = None, catalog: Catalog | None = None):
        super().__init__(root, con, writable, lock_fd)
        self._memo = {} if memo is None else memo
        self._kept_catalog = Catalog() if catalog is None else catalog

    @property
    def _catalog(self) -> Catalog | None:
        """The catalog once this file has been looked up often enough to repay reading it (or it was warmed)."""
        looked = self._memo["lookups"] = self._memo.get("lookups", 0) + 1
        return self._kept_catalog if looked > CATALOG_AFTER or self._memo.get("warm") else None

    def warm(self) -> None:
        """Read the catalog now (the server does, before a snapshot is served)."""
        self._kept_catalog.warm(self.con, self.sets(), self.tasks(), self.relation("texts"),
                                list(self.metadata_columns()))
        self._memo["warm"] = True

    def keep(self, memo: dict, catalog: Catalog) -> "CachedStore":
        """Read through `memo` and `catalog` kept by the caller from an earlier reader of the same file."""
        self._memo, self._kept_catalog = memo, catalog
        return self

    def _once(self, key, read):
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    def sets(self):
        return list(self._once("sets", super().sets))

    def tasks(self):
        return dict(self._once("tasks", super().tasks))

    def relation(self, table: str) -> str:
        return self._once(("relation", table), lambda: super(CachedStore, self).relation(table))

    def metadata_columns(self) -> dict[str, str]:
        return dict(self._once("metadata_columns", super().metadata_columns))

    def live_count(self, s) -> int:
        return self._once(("live", s.set_id), lambda: super(CachedStore, self).live_count(s))

    def passing(self, key: tuple, read) -> np.ndarray:
        """The vec_ids passing a condition (`key`: set, checked SQL, task), read by `read` once among the
        RECENT_FILTERS newest."""
        recent = self._memo.setdefault("passing", OrderedDict())
        if key in recent:
            recent.move_to_end(key)
            return recent[key]
        found = recent[key] = read()
        while len(recent) > RECENT_FILTERS:
            recent.popitem(last=False)
        return found

    def item(self, item_id: int):
        catalog = self._catalog
        if catalog is None:
            return super().item(item_id)
        item = catalog.item(self.con, int(item_id))
        if item is None:
            raise FeatstoreError(f"no item with id {item_id} in {self.root}")
        return item

    def vec_ids_for_hashes(self, s, hashes):
        catalog = self._catalog
        if catalog is None:
            return super().vec_ids_for_hashes(s, hashes)
        known = catalog.hash_vec_ids(self.con, s)
        return {h: known[h] for h in hashes if h in known}

    def vectors_for_hashes(self, s, hashes):
        if self._memo.get("lookups", 0) < CATALOG_AFTER and not self._memo.get("warm"):
            return super().vectors_for_hashes(s, hashes)
        ids = self.vec_ids_for_hashes(s, hashes)
        if len(ids) != 1:
            got, vectors = self.vectors_for_ids(s, list(ids.values()))
            by_id = dict(zip(got.tolist(), vectors))
            return {h: by_id[i] for h, i in ids.items() if i in by_id}
        (h, vec_id), = ids.items()          # a query's one vector: a lookup on the primary key
        rows = self.con.execute(f"SELECT vector FROM {s.table} WHERE vec_id = ?", [vec_id]).fetchnumpy()["vector"]
        return {h: np.asarray(rows[0], dtype=np.float32)} if len(rows) else {}

    def describe_vecs(self, s, vec_ids, task):
        catalog = self._catalog
        if catalog is None:
            return super().describe_vecs(s, vec_ids, task)
        return catalog.describe(self.con, s, vec_ids, task, self.relation("texts"), list(self.metadata_columns()))
