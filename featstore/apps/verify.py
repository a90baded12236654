"""Verify: vectors are finite, no key is stored twice, FAISS agrees with DuckDB, and (optionally) files on disk still match the store."""
from __future__ import annotations

import numpy as np

from featstore import runtimes
from featstore.hashing import content_hash
from featstore.store.index import is_current, paths
from featstore.paths import fs_path
from featstore.store.db import Store
from featstore.store.keys import duplicate_keys

faiss = runtimes.faiss()     # FAISS from the cpu or the gpu extra; without it, one line naming both

CHUNK = 50_000


def verify(store: Store, rehash: bool = False) -> dict:
    """A report of problems; `ok` is True when there are none."""
    sets = []
    for s in store.sets():
        bad = 0
        n = store.con.execute(f"SELECT count(*) FROM {s.table}").fetchone()[0]
        for start in range(0, n, CHUNK):     # bounded memory: one chunk of vectors at a time
            rows = store.con.execute(f"SELECT vector FROM {s.table} ORDER BY vec_id LIMIT {CHUNK} OFFSET {start}"
                                     ).fetchnumpy()["vector"]
            if len(rows):
                bad += int((~np.isfinite(np.stack(rows))).any(axis=1).sum())
        live = store.live_count(s)
        index_path = paths(store, s)[0]
        indexed, index_state = None, "missing (built on next search)"
        if index_path.exists():
            try:
                indexed = faiss.read_index(str(index_path)).ntotal
                current = is_current(store, s) and indexed == live
                index_state = "in sync" if current else "stale (rebuilt from DuckDB on next search)"
            except RuntimeError:
                index_state = "unreadable (rebuilt from DuckDB on next search)"
        sets.append({"set_id": s.set_id, "model": s.model, "vectors": n, "non_finite": bad, "live": live,
                     "indexed": indexed, "index": index_state})
    from featstore.store.activations import verify_activations      # cut activations (embed --cut)

    report = {"store": str(store.root), "sets": sets, "activation_sets": verify_activations(store),
              "duplicate_keys": duplicate_keys(store.con, [s.table for s in store.sets()])}
    if rehash:
        report["files"] = _rehash(store)
    report["ok"] = all(s["non_finite"] == 0 for s in sets) and not report["duplicate_keys"] and not any(
        a["incomplete"] or a["bad_size"] or a["non_finite"] for a in report["activation_sets"]) and (
        not rehash or not (report["files"]["changed"] or report["files"]["vanished"]))
    return report


def _rehash(store: Store) -> dict:
    """Re-read every ok item's file and compare its content hash with the stored one."""
    changed, vanished, checked = [], [], 0
    for path, h in store.con.execute("SELECT path, hash FROM items WHERE status = 'ok' ORDER BY path").fetchall():
        checked += 1
        try:
            with open(fs_path(path), "rb") as f:
                now = content_hash(f.read())
        except OSError:
            vanished.append(path)
            continue
        if now != h:
            changed.append(path)
    return {"checked": checked, "changed": changed, "vanished": vanished}
