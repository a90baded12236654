"""A 2-D map of an embedding set, computed once per set, method and set of live points (an edit of labels or tags
keeps it; new or removed items make a new one) and kept as a small .npz
file (item ids and coordinates) under a cache folder. Methods (scikit-learn):

- "tsne" (the default): PCA to 50 dimensions, then t-SNE on a seeded sample of at most TSNE_SAMPLE points;
  every other point is placed at the distance-weighted mean of its nearest sampled points (in the PCA space).
  Neighbourhoods show as clusters; sampling keeps the cost bounded (t-SNE itself is O(n log n) and slow on a
  few cores: about half a minute for the sample here, whatever the set's size).
- "pca": the first two principal components; instant, but classes overlap more.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store.db import Store
from featstore.store.index import normalise_rows
from featstore.store.schema import EmbeddingSet

FIT_SAMPLE = 20_000        # PCA is fitted on at most this many vectors, then applied to all
TSNE_SAMPLE = 3_000        # t-SNE runs on at most this many; the rest are placed by their sampled neighbours
PLACE_K = 10
METHODS = ("tsne", "pca")
_computing = threading.Lock()      # one map computed at a time in a process (two requests for it wait, not redo)
_keys: dict = {}                   # (cache, set_id, generation) -> the points' key (points_key), a few remembered


def map_points(store: Store, s: EmbeddingSet, cache: Path, generation: int, method: str = "tsne") -> dict:
    """{"item_id": int64 (n,), "xy": float32 (n, 2) scaled to [0, 1]}: one point per stored content of the set,
    named by the first ok item holding it."""
    if method not in METHODS:
        raise FeatstoreError(f"map method: one of {', '.join(METHODS)} (got {method!r})")
    memo = (str(cache), s.set_id, generation)
    key = _keys.get(memo)
    if key is None:
        key = _keys[memo] = points_key(store, s)
        while len(_keys) > 32:
            _keys.pop(next(iter(_keys)))
    path = Path(cache) / f"{s.set_id}-p{key}-{method}.npz"
    if not path.exists():
        with _computing:
            if not path.exists():
                _compute(store, s, path, method)
    with np.load(path) as z:
        return {"item_id": z["item_id"], "xy": z["xy"]}


def _points(store: Store, s: EmbeddingSet) -> dict:
    """{"vec_id", "item_id"}: each live vector of the set and the first ok item holding it, by vec_id."""
    return store.con.execute(
        f"""SELECT e.vec_id, min(i.item_id) AS item_id FROM {s.table} e
            JOIN items i ON i.hash = e.hash AND i.status = 'ok' GROUP BY e.vec_id ORDER BY e.vec_id""").fetchnumpy()


def points_key(store: Store, s: EmbeddingSet) -> str:
    """What a map depends on (which vectors are live, and which item names each), as a short digest: a label,
    tag or other edit moves the store's generation on but leaves the key, and so the computed map, as it was."""
    from featstore.hashing import content_hash

    rows = _points(store, s)
    data = np.asarray(rows["vec_id"], np.int64).tobytes() + np.asarray(rows["item_id"], np.int64).tobytes()
    return content_hash(data)[:16]


def _compute(store: Store, s: EmbeddingSet, path: Path, method: str) -> None:
    vec_ids, vectors = store.live_vectors(s)
    rows = _points(store, s)
    item_of = dict(zip(rows["vec_id"].tolist(), rows["item_id"].tolist()))
    keep = np.array([int(v) in item_of for v in vec_ids], bool)
    vec_ids, vectors = vec_ids[keep], vectors[keep]
    item_ids = np.array([item_of[int(v)] for v in vec_ids], np.int64)
    xy = project(vectors, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, item_id=item_ids, xy=xy)
    os.replace(tmp, path)
    for old in path.parent.glob(f"{s.set_id}-*-{method}.npz"):      # the set's maps of earlier contents
        if old != path:
            old.unlink(missing_ok=True)


def project(vectors: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """Vectors -> 2-D (unit-normalised first), scaled to [0, 1] on each axis."""
    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32)
    x = normalise_rows(np.asarray(vectors, np.float32))
    if len(x) < 3:
        return np.full((len(x), 2), 0.5, np.float32)
    rng = np.random.default_rng(seed)
    if method == "pca" or len(x) < 10:
        xy = _pca(x, 2, rng, seed)
    else:
        xy = _tsne(_pca(x, min(50, x.shape[1], len(x) - 1), rng, seed), rng, seed)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return ((xy - lo) / np.where(hi > lo, hi - lo, 1)).astype(np.float32)


def _pca(x: np.ndarray, dims: int, rng, seed: int) -> np.ndarray:
    """x projected on its first `dims` principal components (fitted on a seeded sample of at most FIT_SAMPLE)."""
    from sklearn.decomposition import PCA

    sample = x[rng.choice(len(x), FIT_SAMPLE, replace=False)] if len(x) > FIT_SAMPLE else x
    pca = PCA(n_components=dims, random_state=seed).fit(sample)
    return np.concatenate([pca.transform(x[i:i + 50_000]) for i in range(0, len(x), 50_000)]).astype(np.float32)


def _tsne(z: np.ndarray, rng, seed: int) -> np.ndarray:
    """t-SNE of a seeded sample of z; the other rows at the distance-weighted mean of their PLACE_K nearest
    sampled rows."""
    from featstore import runtimes
    faiss = runtimes.faiss()
    from sklearn.manifold import TSNE

    n = len(z)
    picked = np.sort(rng.choice(n, TSNE_SAMPLE, replace=False)) if n > TSNE_SAMPLE else np.arange(n)
    landmarks = np.ascontiguousarray(z[picked])
    perplexity = float(min(30.0, (len(picked) - 1) / 3))
    xy = np.zeros((n, 2), np.float32)
    xy[picked] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(landmarks)
    rest = np.setdiff1d(np.arange(n), picked)
    if len(rest):
        index = faiss.IndexFlatL2(landmarks.shape[1])
        index.add(landmarks)
        k = min(PLACE_K, len(picked))
        for start in range(0, len(rest), 50_000):
            rows = rest[start:start + 50_000]
            d2, nn = index.search(np.ascontiguousarray(z[rows]), k)
            w = 1.0 / (np.sqrt(np.maximum(d2, 0)) + 1e-6)
            xy[rows] = (xy[picked][nn] * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    return xy


NUMERIC_MIN_VALUES = 12       # a task whose labels are all numbers, with at least this many distinct ones, is numeric


def colouring(names: list, classes: list) -> dict:
    """How the page colours the points, from each point's label (None: unlabelled): a numeric task (every label a
    number, many distinct ones) as {"numeric": True, "values": [float | None], "range": [lo, hi]} for a
    continuous scale with a colour bar; otherwise {"numeric": False, "classes", "codes": [index | -1]}."""
    if len(classes) >= NUMERIC_MIN_VALUES:
        try:
            numbers = {c: float(c) for c in classes}
        except ValueError:
            numbers = None
        if numbers is not None and all(np.isfinite(v) for v in numbers.values()):
            values = [numbers[n] if n is not None else None for n in names]
            return {"numeric": True, "classes": [], "values": values,
                    "range": [min(numbers.values()), max(numbers.values())], "codes": [-1] * len(names)}
    code = {c: n for n, c in enumerate(classes)}
    return {"numeric": False, "classes": classes, "codes": [code.get(n, -1) for n in names]}
