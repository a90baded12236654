"""The store's write path alone (no decode, no inference): random vectors with their item rows, pushed through
featstore's writer thread into a fresh store as fast as it takes them, against the path featstore used before
(one transaction per batch, the vector matrix handed to DuckDB as flat numpy columns and regrouped into arrays by
array_agg). Used by throughput.py (`--writer-only` runs just this row).

    python benchmarks/writer.py [--vectors 20000] [--batch 128] [--dim 1280] [--repeats 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def todays_store():
    """A Store writing as featstore did before (kept here as the baseline, not in the library): vectors as flat
    numpy columns regrouped by array_agg, DuckDB's default row groups and its default checkpoint threshold and
    compression during the run."""
    from contextlib import nullcontext

    from featstore.store.db import Store

    class TodaysStore(Store):
        row_group_rows = None

        def bulk_writes(self):
            return nullcontext()

        def _insert_vectors(self, s, hashes, vectors):
            try:
                self.con.execute(f"""INSERT INTO {s.table}
                    SELECT (SELECT coalesce(max(vec_id), 0) FROM {s.table}) + r + 1, $1[r + 1], vector
                    FROM {_vector_rows(self.con, "_new_vectors", vectors)}""", [list(hashes)])
            finally:
                self.con.unregister("_new_vectors")
    return TodaysStore


def _vector_rows(con, name: str, vectors: np.ndarray) -> str:
    n, dim = vectors.shape
    con.register(name, {"r": np.repeat(np.arange(n, dtype=np.int64), dim),
                        "j": np.tile(np.arange(dim, dtype=np.int32), n),
                        "x": np.ascontiguousarray(vectors, dtype=np.float32).ravel()})
    return f"(SELECT r, array_agg(x ORDER BY j)::FLOAT[{dim}] AS vector FROM {name} GROUP BY r)"


def _batches(n: int, batch: int, dim: int, seed: int = 0) -> list[tuple]:
    """(rows, hashes, vectors) batches as the embed pipeline hands them to the writer (generated before the clock)."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, batch):
        k = min(batch, n - start)
        hashes = [f"{seed:02d}{start + j:014d}" for j in range(k)]
        rows = [{"path": f"/photos/{(start + j) // 1000:03d}/img{start + j:07d}.jpg", "hash": h, "size": 40_000 + j,
                 "mtime": 1.7e9 + j, "width": 320, "height": 240, "status": "ok", "error": None}
                for j, h in enumerate(hashes)]
        out.append((rows, hashes, rng.standard_normal((k, dim)).astype(np.float32)))
    return out


def _one(store_cls, folder: Path, batches: list[tuple], dim: int, grouped: bool) -> tuple[float, float]:
    """Vectors/s from the first put to the store closed (the writer drained, DuckDB's checkpoint at close
    included), and vectors/s of the writer thread's own time (what a producer running ahead of it sees)."""
    from featstore.embed.write import BatchWriter
    from featstore.store.schema import EmbeddingSet

    shutil.rmtree(folder, ignore_errors=True)
    eset = EmbeddingSet("bench", "bench", dim, "vectors_bench", "-", "-", {}, "fp32", "cpu")
    store = store_cls.open(folder, write=True, create=True)
    store.ensure_set(eset)
    n = sum(len(b[1]) for b in batches)
    t0 = time.perf_counter()
    with BatchWriter(store, eset, group_items=None if grouped else 1) as writer:
        for rows, hashes, vectors in batches:
            writer.put(rows, hashes, vectors)
    store.close()
    seconds = time.perf_counter() - t0
    with store_cls.open(folder) as check:
        assert check.live_count(eset) == n, "writer benchmark: vectors missing from the store"
    return n / seconds, n / writer.seconds


def writer_alone(vectors: int = 20000, batch: int = 128, dim: int = 1280, repeats: int = 3) -> dict:
    """Median vectors/s of featstore's writer and of the previous path, runs alternated in one process."""
    from featstore.store.db import Store

    batches = _batches(vectors, batch, dim)
    work = Path(tempfile.mkdtemp(prefix="fs-writer-"))
    new, old = [], []
    try:
        _one(Store, work / "warm", batches[:4], dim, True)        # first-call costs (imports, Arrow) off the clock
        for i in range(repeats):
            new.append(_one(Store, work / f"new{i}", batches, dim, True))
            old.append(_one(todays_store(), work / f"old{i}", batches, dim, False))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total, todays = statistics.median(r[0] for r in new), statistics.median(r[0] for r in old)
    return {"vectors": vectors, "batch": batch, "dim": dim, "repeats": repeats,
            "vectors_per_second": total, "todays_vectors_per_second": todays,
            "thread_vectors_per_second": statistics.median(r[1] for r in new),
            "todays_thread_vectors_per_second": statistics.median(r[1] for r in old),
            "runs": new, "todays_runs": old, "ratio": total / todays}


def line(r: dict) -> str:
    return (f"writer alone: {r['vectors_per_second']:.0f} vectors/s "
            f"(today's path: {r['todays_vectors_per_second']:.0f} vectors/s)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(line(writer_alone(a.vectors, a.batch, a.dim, a.repeats)))
