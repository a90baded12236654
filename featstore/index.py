"""FAISS index over an embedding set: cosine similarity (inner product of L2-normalised vectors).

DuckDB is the truth; an index file is a cache stamped with the store generation it reflects. Opening one whose
stamp differs from the store's (a crash, a newer embed, a superseded file) rebuilds it from DuckDB, so the index and
DuckDB never disagree.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from .store import EmbeddingSet, Store


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32, C-contiguous."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def paths(store: Store, s: EmbeddingSet) -> tuple[Path, Path]:
    """(index file, stamp file) of an embedding set."""
    return store.root / "index" / f"{s.set_id}.faiss", store.root / "index" / f"{s.set_id}.json"


def read_stamp(store: Store, s: EmbeddingSet) -> dict | None:
    """The generation and count the set's index file was built for, or None if there is no readable stamp."""
    try:
        return json.loads(paths(store, s)[1].read_text())
    except (OSError, ValueError):
        return None


def build(vec_ids: np.ndarray, vectors: np.ndarray, dim: int) -> faiss.Index:
    """Exact inner-product index with the store's vec_ids as FAISS ids."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(vec_ids):
        index.add_with_ids(normalise_rows(vectors), np.asarray(vec_ids, dtype=np.int64))
    return index


def is_current(store: Store, s: EmbeddingSet) -> bool:
    """True when the set's index file exists and its stamp matches the store's generation."""
    stamp = read_stamp(store, s)
    return stamp is not None and stamp.get("generation") == store.generation() and paths(store, s)[0].exists()


def open_index(store: Store, s: EmbeddingSet) -> faiss.Index:
    """The set's index, rebuilt from DuckDB first if missing, stale or unreadable."""
    if is_current(store, s):
        try:
            index = faiss.read_index(str(paths(store, s)[0]))
            if index.ntotal == (read_stamp(store, s) or {}).get("count"):
                return index
        except RuntimeError:   # unreadable index file
            pass
    return refresh(store, s)


def refresh(store: Store, s: EmbeddingSet) -> faiss.Index:
    """Rebuild the set's index from DuckDB's live vectors and save it with the current generation stamp."""
    index_path, stamp_path = paths(store, s)
    generation = store.generation()
    vec_ids, vectors = store.live_vectors(s)
    index = build(vec_ids, vectors, s.dim)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_suffix(f".tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, index_path)
    stamp_tmp = stamp_path.with_suffix(f".tmp{os.getpid()}")
    stamp_tmp.write_text(json.dumps({"generation": generation, "count": int(index.ntotal), "kind": "flat-ip"}))
    os.replace(stamp_tmp, stamp_path)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, vec_ids) of the k nearest stored vectors by cosine similarity; -1 ids pad short results."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    return index.search(normalise_rows(queries), k)
