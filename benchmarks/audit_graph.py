"""The 1M kNN-graph row of benchmarks/audit.py, run in a child process so that its peak RSS is its own.

    python benchmarks/audit_graph.py --n 1000000 --dim 1280 [--k 10]     # prints one JSON line

Data: N seeded synthetic unit vectors with local structure (1,000 topics, 100 groups of 10 per topic: a
vector's nearest neighbours are its group and topic, as with real embeddings), regenerated chunk by chunk on
demand so that the float matrix (5.1 GB at 1M x 1280) is never in memory. The graph is built by featstore's own
functions: an IVF-SQ8 index tuned to recall@10 0.95 (index_kinds.build_tuned, what `index build --kind auto`
picks at 1M under 4 GB), then knn_graph.build_rows over the chunks into a real store's DuckDB knn_graph table, then
knn_graph.measure_recall on 1,000 seeded items against exact search.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from featstore.search import knn_graph
from featstore.store import index_kinds as kinds
from featstore.store.db import Store

CHUNK = 100_000
TOPICS, GROUPS, GROUP_SIZE = 1000, 100, 10


class Streamed(kinds.Vectors):
    """Vector i (1-based id) of the synthetic set, generated per chunk of CHUNK ids."""

    def __init__(self, n: int, dim: int, seed: int = 0):
        self.n, self.dim, self.seed = n, dim, seed
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        self.topics = np.random.default_rng(seed).standard_normal((TOPICS, dim), dtype=np.float32)

    def chunk(self, c: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, c))
        m = min(CHUNK, self.n - c * CHUNK)
        group = (c * CHUNK + np.arange(m)) // GROUP_SIZE                       # global group number
        groups = np.unique(group)
        centre = self.topics[(groups // GROUPS) % TOPICS] + 0.6 * rng.standard_normal((len(groups), self.dim),
                                                                                       dtype=np.float32)
        x = centre[np.searchsorted(groups, group)] + 0.5 * rng.standard_normal((m, self.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def chunks(self):
        for c in range(-(-self.n // CHUNK)):
            x = self.chunk(c)
            for j in range(0, len(x), knn_graph.CHUNK):
                yield self.ids[c * CHUNK + j: c * CHUNK + min(j + knn_graph.CHUNK, len(x))], x[j:j + knn_graph.CHUNK]

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        c_of = (ids - 1) // CHUNK
        for c in np.unique(c_of):
            sel = c_of == c
            out[sel] = self.chunk(int(c))[ids[sel] - 1 - c * CHUNK]
        return out


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run(n: int, dim: int, k: int) -> dict:
    source = Streamed(n, dim)
    t0 = time.perf_counter()
    kind = kinds.choose(n, dim, 4 * 10**9)
    index, record = kinds.build_tuned(kind, source, dim, 0.95)
    kinds.set_param(index, kind, record.get("params", {}))
    index_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        store = Store.open(Path(tmp) / "store", write=True, create=True)
        t1 = time.perf_counter()
        with store.transaction():
            knn_graph.build_rows(store.con, "synthetic", 0, index, source.chunks(), k)
        graph_seconds = time.perf_counter() - t1
        rows = store.con.execute("SELECT count(*) FROM knn_graph").fetchone()[0]
        sample = np.sort(np.random.default_rng(1).choice(source.ids, 1000, replace=False))
        got = np.full((len(sample), k), -1, np.int64)
        where = {int(v): i for i, v in enumerate(sample)}
        for v, r, nb in store.con.execute("SELECT vec_id, rank, neighbour_id FROM knn_graph WHERE vec_id IN "
                                          "(SELECT unnest($1::BIGINT[]))", [sample.tolist()]).fetchall():
            got[where[v], r - 1] = nb
        t2 = time.perf_counter()
        recall = knn_graph.measure_recall(source, sample, got, k)
        recall_seconds = time.perf_counter() - t2
        store.con.execute("CHECKPOINT")
        db_bytes = (Path(tmp) / "store" / "store.duckdb").stat().st_size
        store.close()
    return {"n": n, "dim": dim, "k": k, "index": kind, "index_params": record.get("params"),
            "index_recall_at_10": record.get("recall_at_10"), "index_seconds": index_seconds,
            "graph_seconds": graph_seconds, "rows": int(rows), "graph_recall": recall, "recall_sample": 1000,
            "recall_seconds": recall_seconds, "duckdb_bytes": db_bytes, "peak_rss_gb": peak_rss_gb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    print(json.dumps(run(args.n, args.dim, args.k)))


if __name__ == "__main__":
    main()
