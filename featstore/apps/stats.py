"""Stats: what a store holds (items by status, duplicates, failures, embedding sets, tasks, heads, indexes)."""
from __future__ import annotations

from featstore.heads.evaluate import main_metric
from featstore.heads.storage import head_records
from featstore.store.index import read_stamp
from featstore.store.db import Store
from featstore.store.edits import all_tags, edit_count, excluded_paths


def stats(store: Store) -> dict:
    con = store.con
    by_status = dict(con.execute("SELECT status, count(*) FROM items GROUP BY status ORDER BY status").fetchall())
    contents = con.execute("SELECT count(DISTINCT hash) FROM items WHERE status = 'ok'").fetchone()[0]
    sets = []
    for s in store.sets():
        n = con.execute(f"SELECT count(*) FROM {s.table}").fetchone()[0]
        live, index = store.live_count(s), read_stamp(store, s)
        sets.append({"set_id": s.set_id, "model": s.model, "modality": s.modality, "dim": s.dim, "precision": s.precision,
                     "provider": s.provider, "vectors": n, "live_vectors": live,
                     "bytes": n * s.dim * 4, "index": index})
    heads = [{"name": r["name"], "kind": r["kind"], "task": r["task"], "set_id": r["set_id"],
              "metric": main_metric(r["metrics"])[0], "value": main_metric(r["metrics"])[1],
              "test_accuracy": r["metrics"].get("test_accuracy"), "n_train": r["metrics"].get("n_train"),
              "chosen": {(r["metrics"].get("cv") or {}).get("param"): (r["metrics"].get("cv") or {}).get("chosen")},
              "created_at": r["created_at"]}
             for r in head_records(store)]
    groups = con.execute("SELECT hash, list(path ORDER BY path) FROM items WHERE status = 'ok' GROUP BY hash "
                         "HAVING count(*) > 1 ORDER BY min(path)").fetchall()
    failed = con.execute("SELECT path, error FROM items WHERE status = 'failed' ORDER BY path").fetchall()
    from featstore.store.activations import activation_stats

    return {"store": str(store.root), "schema_version": int(store.meta("schema_version")),
            "items": by_status, "distinct_contents": contents, "duplicate_paths": by_status.get("ok", 0) - contents,
            "duplicates": [{"hash": h, "paths": paths} for h, paths in groups],
            "failed": [{"path": p, "error": e} for p, e in failed],
            "tasks": store.tasks(), "embedding_sets": sets, "heads": heads, "last_runs": store.runs(limit=5),
            "curation": {"tags": all_tags(store), "excluded": len(excluded_paths(store)), "edits": edit_count(store)},
            "activation_sets": activation_stats(store)}
