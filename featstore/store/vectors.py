"""Reading a set's vectors out of DuckDB as numpy (all live ones, chunk by chunk, by hash or by id), and handing a
vector matrix to DuckDB without Python lists. VectorReads is part of Store (store/db.py)."""
from __future__ import annotations

import duckdb
import numpy as np

from featstore.store.schema import EmbeddingSet

LIVE_HASHES = "(SELECT hash FROM items WHERE status = 'ok')"              # contents some ok item points at


class VectorReads:
    """The Store methods that read vectors (they use only its connection, `self.con`)."""

    con: duckdb.DuckDBPyConnection

    def live_vectors(self, s: EmbeddingSet) -> tuple[np.ndarray, np.ndarray]:
        """(vec_ids, vectors) of every vector some ok item still points at."""
        rows = self.con.execute(
            f"SELECT e.vec_id, e.vector FROM {s.table} e WHERE e.hash IN {LIVE_HASHES} ORDER BY e.vec_id").fetchnumpy()
        return _unpack(rows, s.dim)

    def live_ids(self, s: EmbeddingSet) -> np.ndarray:
        """vec_ids of the live vectors, ascending (no vectors read)."""
        rows = self.con.execute(
            f"SELECT vec_id FROM {s.table} WHERE hash IN {LIVE_HASHES} ORDER BY vec_id").fetchnumpy()
        return np.asarray(rows["vec_id"], dtype=np.int64)

    def iter_live_vectors(self, s: EmbeddingSet, chunk: int = 4096, ids: np.ndarray | None = None):
        """(vec_ids, vectors) of the live vectors, chunk by chunk in vec_id order (memory: one chunk). Each chunk
        is a vec_id range scan, so DuckDB reads only that range's vectors (zone maps skip the rest). `ids`: the
        live_ids the caller already holds."""
        ids = self.live_ids(s) if ids is None else ids
        for start in range(0, len(ids), chunk):
            lo, hi = int(ids[start]), int(ids[min(start + chunk, len(ids)) - 1])
            rows = self.con.execute(
                f"SELECT vec_id, vector FROM {s.table} WHERE vec_id BETWEEN ? AND ? AND hash IN {LIVE_HASHES} "
                "ORDER BY vec_id", [lo, hi]).fetchnumpy()
            yield _unpack(rows, s.dim)

    def live_count(self, s: EmbeddingSet) -> int:
        """How many of the set's vectors are live (what its FAISS index must hold)."""
        return self.con.execute(f"SELECT count(*) FROM {s.table} WHERE hash IN {LIVE_HASHES}").fetchone()[0]

    def vectors_for_hashes(self, s: EmbeddingSet, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        rows = self.con.execute(f"SELECT hash, vector FROM {s.table} WHERE hash IN (SELECT unnest($1))",
                                [list(hashes)]).fetchall()
        return {h: np.asarray(v, dtype=np.float32) for h, v in rows}

    def vec_ids_for_hashes(self, s: EmbeddingSet, hashes: list[str]) -> dict[str, int]:
        """content hash -> vec_id for the given contents the set holds (no vectors read)."""
        if not hashes:
            return {}
        return dict(self.con.execute(f"SELECT hash, vec_id FROM {s.table} WHERE hash IN (SELECT unnest($1))",
                                     [list(hashes)]).fetchall())

    def vectors_for_ids(self, s: EmbeddingSet, vec_ids) -> tuple[np.ndarray, np.ndarray]:
        """(vec_ids, vectors) of the given vec_ids that exist, in vec_id order."""
        rows = self.con.execute(f"SELECT vec_id, vector FROM {s.table} WHERE vec_id IN (SELECT unnest($1)) "
                                "ORDER BY vec_id", [list(map(int, vec_ids))]).fetchnumpy()
        return _unpack(rows, s.dim)


def vector_table(vectors: np.ndarray, hashes: list[str] | None = None, chunk_rows: int | None = None):
    """An (n, dim) matrix as an Arrow table for DuckDB to scan in place: r (0-based row number) and vector, a
    fixed-size list over the matrix's own float32 buffer that DuckDB reads as FLOAT[dim] (no Python lists; no
    copy of a C-contiguous float32 matrix), and with `hashes`, hash (row r's). Built from buffers: pa.array
    would import pandas where it is installed, half a second at a run's first batch. Register it, insert from
    it, unregister it. `chunk_rows`: as record batches of that many rows (views, no copy), which DuckDB's
    threads insert side by side (one batch is one thread's work), keeping the rows' order."""
    import pyarrow as pa

    from featstore.store.columns import column

    n, dim = vectors.shape
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    rows = np.arange(n, dtype=np.int64)
    values = pa.Array.from_buffers(pa.float32(), n * dim, [None, pa.py_buffer(flat)])
    arrays = [pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(rows)]),
              pa.FixedSizeListArray.from_arrays(values, dim)]
    if hashes is None:
        table = pa.Table.from_arrays(arrays, names=["r", "vector"])
    else:
        table = pa.Table.from_arrays(arrays + [column("VARCHAR", hashes)], names=["r", "vector", "hash"])
    if chunk_rows and n > chunk_rows:
        table = pa.Table.from_batches(table.to_batches(max_chunksize=chunk_rows))
    return table


def _unpack(rows: dict, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(rows["vec_id"], dtype=np.int64)
    if len(ids) == 0:
        return ids, np.zeros((0, dim), np.float32)
    return ids, np.stack(rows["vector"]).astype(np.float32)
