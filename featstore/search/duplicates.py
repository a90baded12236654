"""Duplicates: exact copies (same content hash at several paths) and near-duplicates (cosine similarity at or above
a threshold between distinct contents), and, for a task, near-duplicates that straddle its held-out split.

Near-duplicates come from FAISS range searches over the set's live vectors, read from DuckDB and searched CHUNK at
a time, so memory holds the index and one chunk (not all vectors, not the n x n similarities). With the
approximate index kinds (IVF, HNSW; see featstore/store/index_kinds.py) the search is approximate at their tuned recall. Pairs
are joined into groups (union-find).
"""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store.index import normalise_rows, open_index
from featstore.store.db import Store
from featstore.store.labels import task_for

CHUNK = 4096
NEAR_K = 100


def near_pairs(store: Store, s, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vec_id_a, vec_id_b, similarity) for every pair of distinct live contents with cosine >= threshold."""
    return pairs_in_chunks(open_index(store, s), store.iter_live_vectors(s, CHUNK), threshold)


def pairs_in_chunks(index, chunks, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range-search each chunk of (vec_ids, vectors) against the index; keep each pair once.

    Flat and IVF indexes answer range searches (IVF with its tuned nprobe, so approximately); HNSW cannot, so
    it is asked for the NEAR_K nearest instead and those above the threshold are kept."""
    a_out, b_out, sim_out = [], [], []
    for ids, vecs in chunks:
        q = normalise_rows(vecs)
        try:
            lims, sims, hits = index.range_search(q, float(threshold))
            owners = np.repeat(ids, np.diff(lims).astype(np.int64))
        except RuntimeError:                                 # HNSW: no range search
            sims, hits = index.search(q, NEAR_K)
            owners = np.repeat(ids, NEAR_K)
            sims, hits = sims.ravel(), hits.ravel()
            ok = sims >= threshold
            owners, sims, hits = owners[ok], sims[ok], hits[ok]
        keep = hits > owners                                    # each pair once, never an item with itself
        a_out.append(owners[keep]), b_out.append(hits[keep]), sim_out.append(sims[keep])
    cat = (lambda parts, t: np.concatenate(parts).astype(t) if parts else np.zeros(0, t))
    return cat(a_out, np.int64), cat(b_out, np.int64), cat(sim_out, np.float32)


def _groups(a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def duplicates(store: Store, threshold: float = 0.97, task: str | None = None, model: str | None = None) -> dict:
    if not 0 < threshold <= 1:
        raise FeatstoreError(f"--threshold must be in (0, 1], got {threshold}")
    label_task = task_for(store, task)                      # whose labels the groups show
    s = store.set_for_task(task, model) if task else store.pick_set(model)
    exact = store.con.execute("SELECT hash, list(path ORDER BY path) FROM items WHERE status = 'ok' GROUP BY hash "
                              "HAVING count(*) > 1 ORDER BY min(path)").fetchall()
    a, b, sims = near_pairs(store, s, threshold)
    info = store.describe_vecs(s, sorted(set(a.tolist()) | set(b.tolist())), label_task)
    best = {}
    for x, y, sim in zip(a.tolist(), b.tolist(), sims.tolist()):
        best[x] = max(best.get(x, 0.0), sim)
        best[y] = max(best.get(y, 0.0), sim)
    groups = [{"size": len(g), "max_similarity": round(max(best[v] for v in g), 6),
               "items": [{k: info[v][k] for k in ("item_id", "path", "hash", "label")} for v in g]}
              for g in _groups(a, b)]
    out = {"model": s.model, "set_id": s.set_id, "threshold": threshold, "live_vectors": store.live_count(s),
           "exact": [{"hash": h, "paths": p} for h, p in exact], "near_pairs": int(len(a)), "near_groups": groups,
           "task": task, "label_task": label_task}
    if task:
        split = store.split_of(task)
        if not split:
            raise FeatstoreError(f"task {task!r} has no stored held-out split yet; run `featstore fit-head --task "
                                 f"{task}` first (it draws and stores the split)")
        leaks = []
        for x, y, sim in zip(a.tolist(), b.tolist(), sims.tolist()):
            sx, sy = split.get(info[x]["hash"]), split.get(info[y]["hash"])
            if {sx, sy} == {"train", "test"}:
                tr, te = (x, y) if sx == "train" else (y, x)
                leaks.append({"similarity": round(sim, 6), "train": info[tr]["path"], "test": info[te]["path"],
                              "train_label": info[tr]["label"], "test_label": info[te]["label"]})
        leaks.sort(key=lambda r: -r["similarity"])
        out["leakage"] = {"pairs": leaks, "test_items_affected": len({r["test"] for r in leaks}),
                          "test_items": sum(v == "test" for v in split.values())}
    return out
