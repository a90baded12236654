"""A 2-D map of an embedding set: PCA of its live vectors to two dimensions (scikit-learn), computed once per set
and store generation and kept as a small .npz file (item ids and coordinates) under a cache folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featstore.store.db import Store
from featstore.store.index import normalise_rows
from featstore.store.schema import EmbeddingSet

FIT_SAMPLE = 20_000        # the projection is fitted on at most this many vectors, then applied to all


def map_points(store: Store, s: EmbeddingSet, cache: Path, generation: int) -> dict:
    """{"item_id": int64 (n,), "xy": float32 (n, 2) scaled to [0, 1]}: one point per stored content of the set,
    named by the first ok item holding it."""
    path = Path(cache) / f"{s.set_id}-g{generation}.npz"
    if path.exists():
        with np.load(path) as z:
            return {"item_id": z["item_id"], "xy": z["xy"]}
    vec_ids, vectors = store.live_vectors(s)
    item_of = dict(store.con.execute(
        f"""SELECT e.vec_id, min(i.item_id) FROM {s.table} e JOIN items i ON i.hash = e.hash AND i.status = 'ok'
            GROUP BY e.vec_id""").fetchall())
    keep = np.array([int(v) in item_of for v in vec_ids], bool)
    vec_ids, vectors = vec_ids[keep], vectors[keep]
    item_ids = np.array([item_of[int(v)] for v in vec_ids], np.int64)
    xy = project(vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, item_id=item_ids, xy=xy)
    os.replace(tmp, path)
    return {"item_id": item_ids, "xy": xy}


def project(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit-normalised vectors -> 2-D by PCA (fitted on a seeded sample of at most FIT_SAMPLE), scaled to [0, 1]."""
    from sklearn.decomposition import PCA

    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32)
    x = normalise_rows(np.asarray(vectors, np.float32))
    if len(x) < 3:
        return np.full((len(x), 2), 0.5, np.float32)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), FIT_SAMPLE, replace=False)] if len(x) > FIT_SAMPLE else x
    pca = PCA(n_components=2, random_state=seed).fit(sample)
    xy = np.concatenate([pca.transform(x[i:i + 50_000]) for i in range(0, len(x), 50_000)]).astype(np.float32)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return ((xy - lo) / np.where(hi > lo, hi - lo, 1)).astype(np.float32)
