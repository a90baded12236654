"""Garbage collection: drop removed items (vanished from their source), superseded vectors and old embedding sets
no head uses, then compact the file."""
from __future__ import annotations

from pathlib import Path

from featstore.models.precision import info_path
from featstore.store.db import Store
from featstore.store.index import paths, refresh
from featstore.store.vanished import REMOVED

KEPT_HASHES = f"(SELECT hash FROM items WHERE hash IS NOT NULL AND status <> '{REMOVED}')"   # after gc


def collect(store: Store, dry_run: bool = False) -> dict:
    """Old sets = not the newest set of their model and precision (an int8 set does not supersede the fp32 one)
    and not used by any stored head. A dropped int8 set's calibrated graph in the store goes with it. Removed
    items (vanished from their folder or table) go with their labels; a vector and a stored text go once no item left uses them."""
    sets = store.sets()
    removed_items = [r[0] for r in store.con.execute(
        "SELECT path FROM items WHERE status = ? ORDER BY path", [REMOVED]).fetchall()]
    newest = {(s.model, s.precision): s.set_id for s in sets}       # sets() is ordered by creation time
    used = {r[0] for r in store.con.execute("SELECT DISTINCT set_id FROM heads").fetchall()}
    old = [s for s in sets if newest[(s.model, s.precision)] != s.set_id and s.set_id not in used]
    superseded = {}
    for s in sets:
        if s in old:
            continue
        superseded[s.set_id] = store.con.execute(
            f"SELECT count(*) FROM {s.table} WHERE hash NOT IN {KEPT_HASHES}").fetchone()[0]
    texts = store.con.execute(f"SELECT count(*) FROM texts WHERE hash NOT IN {KEPT_HASHES}").fetchone()[0]
    report = {"removed_sets": [{"set_id": s.set_id, "model": s.model} for s in old],
              "removed_vectors": superseded, "removed_items": removed_items, "removed_texts": texts,
              "dry_run": dry_run}
    from featstore.store.activations import collect_activations     # cut activations (embed --cut) go along

    report |= collect_activations(store, [s.set_id for s in old], KEPT_HASHES, dry_run)
    if dry_run:
        return report
    with store.transaction():
        if removed_items:
            for table in ("labels", "tags", "exclusions"):              # the item's curation goes with it
                store.con.execute(f"DELETE FROM {table} WHERE path IN (SELECT path FROM items WHERE status = ?)",
                                  [REMOVED])
            store.con.execute("DELETE FROM items WHERE status = ?", [REMOVED])
        if texts:                                   # a text no item holds any more (its row left the table)
            store.con.execute(f"DELETE FROM texts WHERE hash NOT IN {KEPT_HASHES}")
        for s in old:
            store.con.execute(f"DROP TABLE {s.table}")
            store.con.execute("DELETE FROM embedding_sets WHERE set_id = ?", [s.set_id])
        for s in sets:
            if s not in old and superseded[s.set_id]:
                store.con.execute(f"DELETE FROM {s.table} WHERE hash NOT IN {KEPT_HASHES}")
            if s in old or superseded[s.set_id]:     # a freed vec_id may be reused: the kNN graph is rebuilt
                for table in ("knn_graph", "knn_graphs"):
                    store.con.execute(f"DELETE FROM {table} WHERE set_id = ?", [s.set_id])
        if old or removed_items or texts or any(superseded.values()):      # nothing removed: the indexes stay current
            store._bump_generation()
    for s in sets:      # an index file holds no freed vec_id (a later vector may get it): restamped, or updated
        if s not in old and superseded[s.set_id] and paths(store, s)[0].exists():
            refresh(store, s)
    for s in old:
        for path in paths(store, s):
            path.unlink(missing_ok=True)
        graph = Path(s.onnx_path)
        if graph.parent == store.root / "models" and not any(t.onnx_path == s.onnx_path for t in store.sets()):
            graph.unlink(missing_ok=True)
            info_path(graph).unlink(missing_ok=True)
    store.con.execute("CHECKPOINT")
    return report
