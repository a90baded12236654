"""The kNN graph of an embedding set: the K nearest live vectors of every live vector (ids and cosine), stored in
DuckDB (tables knn_graph / knn_graphs) and keyed by the set and the store generation it reflects.

Ids are vec_ids: one per distinct content (copies of one file share a vector, so they are one node; exact copies
are what `duplicates` reports).

How: the live vectors are read CHUNK at a time and each chunk searched for its K + 1 nearest (itself dropped).
Up to EXACT_MAX live vectors the search is exact (a flat index: the set's own when it is flat, else a flat one
filled from the store chunk by chunk); beyond, it goes through the set's tuned index (`featstore index build`;
a set still on the default flat index gets the auto kind first), and the recall of the stored rows against exact
search is measured on RECALL_SAMPLE seeded items and recorded with the graph.

Incremental rule (`graph`): when the store generation moved on, with A the live vectors the graph lacks (added,
or contents that superseded others) and R the graph's vectors no longer live (removed, superseded):
  * rows of R are deleted; rows of A are computed;
  * an existing row is recomputed when one of its neighbours is in R, or when some vector of A is at least as
    close to it as its K-th neighbour (found exactly: every old vector is searched against a flat index of A,
    the reverse direction);
  * every other row is kept: its K nearest cannot have changed.
When more than REBUILD_FRACTION of the live vectors would be recomputed, or K or the exact/approximate mode
changes, the graph is rebuilt. Memory: the index, one chunk of vectors and the chunk's rows; the graph's rows go
to DuckDB chunk by chunk.
"""
from __future__ import annotations

import json
import time

import numpy as np

from featstore import runtimes
from featstore.store import index_kinds as kinds
from featstore.store.db import EmbeddingSet, Store
from featstore.store.index import StoreVectors, normalise_rows, open_index, read_stamp, rebuild

faiss = runtimes.faiss()     # FAISS from the cpu or the gpu extra; without it, one line naming both

K = 10
EXACT_MAX = 200_000          # live vectors up to which the graph is exact (a flat index: ~1 GB at 1280-d)
CHUNK = 4096
RECALL_SAMPLE = 1000
REBUILD_FRACTION = 0.5


def neighbour_rows(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour ids (n, k), cosines (n, k)) of unit vectors `vecs` with ids `ids`, themselves left out; -1 and
    -inf pad a row only when the index holds fewer than k others. An IVF index whose probed lists hold fewer
    than k others for some rows searches those rows again with more lists probed (x4 at a time)."""
    nbr, cos = _search(index, ids, vecs, k)
    short = (nbr < 0).any(1)
    if not short.any() or index.ntotal <= k:
        return nbr, cos
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:        # flat / HNSW: nothing more to probe
        return nbr, cos
    nprobe = ivf.nprobe
    try:
        while short.any() and ivf.nprobe < ivf.nlist:
            ivf.nprobe = min(ivf.nlist, ivf.nprobe * 4)
            nbr[short], cos[short] = _search(index, ids[short], vecs[short], k)
            short = (nbr < 0).any(1)
    finally:
        ivf.nprobe = nprobe
    return nbr, cos


def _search(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    want = min(k + 1, max(index.ntotal, 1))
    sims, hits = index.search(np.ascontiguousarray(vecs, np.float32), want)
    if want < k + 1:
        hits = np.pad(hits, ((0, 0), (0, k + 1 - want)), constant_values=-1)
        sims = np.pad(sims, ((0, 0), (0, k + 1 - want)), constant_values=-np.inf)
    keep = (hits != ids[:, None]) & (hits >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]          # the others, nearest first
    nbr, cos = np.take_along_axis(hits, order, 1), np.take_along_axis(sims, order, 1).astype(np.float32)
    bad = ~np.take_along_axis(keep, order, 1)
    nbr[bad], cos[bad] = -1, -np.inf
    return nbr, cos


def write_rows(con, set_id: str, generation: int, ids: np.ndarray, nbr: np.ndarray, cos: np.ndarray) -> None:
    """Append graph rows (padding left out) with one columnar insert."""
    k = nbr.shape[1]
    ok = nbr.ravel() >= 0
    con.register("_knn_rows", {"vec_id": np.repeat(ids.astype(np.int64), k)[ok],
                               "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(ids))[ok],
                               "neighbour_id": nbr.ravel()[ok], "cosine": cos.ravel()[ok]})
    try:
        con.execute("INSERT INTO knn_graph SELECT $1, vec_id, rank, neighbour_id, cosine, $2 FROM _knn_rows",
                    [set_id, int(generation)])
    finally:
        con.unregister("_knn_rows")


def build_rows(con, set_id: str, generation: int, index: faiss.Index, chunks, k: int,
               log=lambda msg: None, total: int | None = None) -> int:
    """Search every chunk of (ids, unit vectors) and append its rows; returns the number of vectors done."""
    done, t0, step = 0, time.perf_counter(), max((total or 0) // 10, 1)
    for ids, vecs in chunks:
        nbr, cos = neighbour_rows(index, ids, vecs, k)
        write_rows(con, set_id, generation, ids, nbr, cos)
        if total and (done + len(ids)) // step > done // step or done + len(ids) == total:
            log(f"kNN graph: {done + len(ids)}/{total} vectors ({time.perf_counter() - t0:.0f} s)")
        done += len(ids)
    return done


def measure_recall(source: kinds.Vectors, sample_ids: np.ndarray, stored: np.ndarray, k: int) -> float:
    """Mean fraction of the exact k nearest (by a pass over all vectors) found in the stored rows of sample_ids."""
    queries = source.fetch(sample_ids)
    top = kinds.TopK(len(sample_ids), k + 1)
    for ids, vecs in source.chunks():
        top.update(queries @ vecs.T, ids)
    truth = top.ids()
    hits = []
    for sid, t, got in zip(sample_ids.tolist(), truth.tolist(), stored.tolist()):
        t = [i for i in t if i != sid][:k]
        hits.append(len(set(t) & set(got)) / max(len(t), 1))
    return float(np.mean(hits)) if hits else 1.0


def record_of(store: Store, s: EmbeddingSet) -> dict | None:
    """The stored graph's header: generation, k, exact and how it was made; None before the first build."""
    row = store.con.execute(f"SELECT generation, k, exact, record FROM {store.relation('knn_graphs')} "
                            "WHERE set_id = ?", [s.set_id]).fetchone()
    return None if row is None else {"generation": row[0], "k": row[1], "exact": row[2], **json.loads(row[3])}


def read_graph(store: Store, s: EmbeddingSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vec_ids (n,), neighbour ids (n, k), cosines (n, k)) of the stored graph; -1 / -inf pad short rows."""
    rec = record_of(store, s)
    k = rec["k"] if rec else K
    rows = store.con.execute(f"SELECT vec_id, rank, neighbour_id, cosine FROM {store.relation('knn_graph')} "
                             "WHERE set_id = ? ORDER BY vec_id, rank", [s.set_id]).fetchnumpy()
    ids, pos = np.unique(np.asarray(rows["vec_id"], np.int64), return_inverse=True)
    nbr = np.full((len(ids), k), -1, np.int64)
    cos = np.full((len(ids), k), -np.inf, np.float32)
    ranks = np.asarray(rows["rank"], np.int64) - 1
    nbr[pos, ranks] = rows["neighbour_id"]
    cos[pos, ranks] = rows["cosine"]
    return ids, nbr, cos


def graph(store: Store, s: EmbeddingSet, k: int = K, rebuild: bool = False, log=lambda msg: None) -> dict:
    """The set's kNN graph brought up to date (built, refreshed incrementally or found current; `rebuild`: built
    from scratch); returns its header. Needs the store open for writing."""
    rec = record_of(store, s)
    live = store.live_ids(s)
    exact = len(live) <= EXACT_MAX
    if rec and rec["k"] == k and rec["exact"] == exact and not rebuild:
        if rec["generation"] == store.generation():
            return {**rec, "action": "current", "recomputed": 0}
        out = _refresh(store, s, rec, live, log)
        if out is not None:
            return out
    return _build(store, s, k, live, exact, log)


def _index_for(store: Store, s: EmbeddingSet, exact: bool, source: StoreVectors, log) -> tuple[faiss.Index, dict]:
    """The index the graph searches, and what to record about it."""
    stamp = read_stamp(store, s) or {}
    if exact:
        if stamp.get("kind", "flat") == "flat":
            return open_index(store, s), {"index": "flat"}
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(s.dim))
        for ids, vecs in source.chunks():
            index.add_with_ids(vecs, ids)
        return index, {"index": "flat (exact, filled for the graph)"}
    index = open_index(store, s)
    stamp = read_stamp(store, s) or {}
    if stamp.get("kind", "flat") == "flat":
        log(f"{len(source.ids)} vectors: building the auto index first (featstore index build)")
        index = rebuild(store, s, "auto", log=log)
        stamp = read_stamp(store, s)
    return index, {"index": stamp.get("kind"), "index_params": stamp.get("params", {}),
                   "index_recall_at_10": stamp.get("recall_at_10")}


def _build(store: Store, s: EmbeddingSet, k: int, live: np.ndarray, exact: bool, log) -> dict:
    t0 = time.perf_counter()
    source = StoreVectors(store, s)
    index, about = _index_for(store, s, exact, source, log)
    generation = store.generation()
    with store.transaction():
        store.con.execute("DELETE FROM knn_graph WHERE set_id = ?", [s.set_id])
        store.con.execute("DELETE FROM knn_graphs WHERE set_id = ?", [s.set_id])
        build_rows(store.con, s.set_id, generation, index, source.chunks(), k, log=log, total=len(live))
    record = {**about, "count": int(len(live)), "built_seconds": time.perf_counter() - t0, "recall": 1.0,
              "recall_sample": 0}
    if not exact:
        sample = np.sort(np.random.default_rng(0).choice(live, min(RECALL_SAMPLE, len(live)), replace=False))
        got = _rows_for(store, s, sample, k)
        record.update(recall=measure_recall(source, sample, got, k), recall_sample=int(len(sample)))
    _write_header(store, s, generation, k, exact, record)
    return {"generation": generation, "k": k, "exact": exact, **record, "action": "built",
            "recomputed": int(len(live))}


def _rows_for(store: Store, s: EmbeddingSet, vec_ids: np.ndarray, k: int) -> np.ndarray:
    rows = store.con.execute("SELECT vec_id, rank, neighbour_id FROM knn_graph WHERE set_id = $1 AND vec_id IN "
                             "(SELECT unnest($2::BIGINT[]))", [s.set_id, vec_ids.tolist()]).fetchall()
    out = np.full((len(vec_ids), k), -1, np.int64)
    where = {int(v): i for i, v in enumerate(vec_ids)}
    for v, r, n in rows:
        out[where[v], r - 1] = n
    return out


def _refresh(store: Store, s: EmbeddingSet, rec: dict, live: np.ndarray, log) -> dict | None:
    """Recompute only the affected rows (the rule in the module docstring); None when a rebuild is due."""
    t0 = time.perf_counter()
    k, con = rec["k"], store.con
    held = np.asarray(con.execute("SELECT DISTINCT vec_id FROM knn_graph WHERE set_id = ? ORDER BY vec_id",
                                  [s.set_id]).fetchnumpy()["vec_id"], np.int64)
    added, removed = np.setdiff1d(live, held), np.setdiff1d(held, live)
    kept = np.intersect1d(held, live)
    hit_removed = np.asarray(con.execute(
        "SELECT DISTINCT vec_id FROM knn_graph WHERE set_id = $1 AND neighbour_id IN (SELECT unnest($2::BIGINT[]))",
        [s.set_id, removed.tolist()]).fetchnumpy()["vec_id"], np.int64) if len(removed) else np.zeros(0, np.int64)
    entered = _entered_by(store, s, kept, added, k) if len(added) else np.zeros(0, np.int64)
    redo = np.union1d(added, np.intersect1d(np.union1d(hit_removed, entered), kept))
    if len(redo) > REBUILD_FRACTION * max(len(live), 1):
        return None
    source = StoreVectors(store, s)
    index, _ = _index_for(store, s, rec["exact"], source, log)
    generation = store.generation()
    drop = np.union1d(removed, redo)
    with store.transaction():
        if len(drop):
            con.execute("DELETE FROM knn_graph WHERE set_id = $1 AND vec_id IN (SELECT unnest($2::BIGINT[]))",
                        [s.set_id, drop.tolist()])
        chunks = ((redo[i:i + CHUNK], source.fetch(redo[i:i + CHUNK])) for i in range(0, len(redo), CHUNK))
        build_rows(con, s.set_id, generation, index, chunks, k)
    record = {key: v for key, v in rec.items() if key not in ("generation", "k", "exact")}
    record.update(count=int(len(live)), refreshed_seconds=time.perf_counter() - t0)
    _write_header(store, s, generation, k, rec["exact"], record)
    return {"generation": generation, "k": k, "exact": rec["exact"], **record, "action": "refreshed",
            "recomputed": int(len(redo)), "added": int(len(added)), "removed": int(len(removed))}


def _entered_by(store: Store, s: EmbeddingSet, kept: np.ndarray, added: np.ndarray, k: int) -> np.ndarray:
    """Kept vectors that some added vector is at least as close to as their K-th stored neighbour (exact: every
    kept vector is searched, chunk by chunk, against a flat index of the added ones)."""
    kth = dict(store.con.execute("SELECT vec_id, CASE WHEN count(*) < $2 THEN -2.0 ELSE min(cosine) END "
                                 "FROM knn_graph WHERE set_id = $1 GROUP BY vec_id", [s.set_id, k]).fetchall())
    source = StoreVectors(store, s)
    fresh = faiss.IndexFlatIP(s.dim)
    fresh.add(source.fetch(added))
    out = []
    kept_set = set(kept.tolist())
    for ids, vecs in source.chunks():
        mask = np.fromiter((i in kept_set for i in ids.tolist()), bool, len(ids))
        if not mask.any():
            continue
        best, _ = fresh.search(normalise_rows(vecs[mask]), 1)
        bar = np.array([kth[i] for i in ids[mask].tolist()], np.float32)
        out.append(ids[mask][best[:, 0] >= bar - 1e-6])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _write_header(store: Store, s: EmbeddingSet, generation: int, k: int, exact: bool, record: dict) -> None:
    store.con.execute("INSERT INTO knn_graphs VALUES (?, ?, ?, ?, ?) ON CONFLICT (set_id) DO UPDATE SET "
                      "generation = excluded.generation, k = excluded.k, exact = excluded.exact, "
                      "record = excluded.record", [s.set_id, int(generation), int(k), bool(exact),
                                                   json.dumps(record)])
