"""`featstore select`: which items to label next, from the cached features.

Strategies (the pool: the set's items without a label in the task, or all with include_labelled):
  * diverse: coverage. k-means (cosine, seeded) splits the pool into N clusters; the item nearest each centre.
  * uncertain: a logistic-regression head fitted on the task's labelled items scores the pool; the N items with
    the smallest margin between its two most likely classes (needs labelled items of two classes or more).
  * typical: density. The N items with the highest typicality (mean cosine to their K nearest in the kNN
    graph), skipping near-copies (cosine >= NEAR_COPY) of items already picked.
N beyond the pool returns the whole pool, in the strategy's order, with a note. The pool's vectors are read into
memory (pool x dim float32).
"""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError, one_of
from featstore.heads.logreg import LogisticRegressionHead
from featstore.search import knn_graph
from featstore.store.db import Store
from featstore.store.index import StoreVectors
from featstore.store.labels import task_for

STRATEGIES = ("diverse", "uncertain", "typical")
NEAR_COPY = 0.97
HEAD_C = 0.01


def diverse(X: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Positions of n rows of unit vectors X: the row nearest each of n k-means centres, larger clusters first."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n, random_state=seed, n_init=3).fit(X)
    picks, sizes = [], []
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            picks.append(members[np.argmax(X[members] @ km.cluster_centers_[c])])
            sizes.append(len(members))
    order = np.argsort(-np.asarray(sizes), kind="stable")
    return np.asarray(picks, np.int64)[order]


def uncertain(X: np.ndarray, X_labelled: np.ndarray, y_labelled: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the n rows of X with the smallest top-two margin, those margins), by a head on the labelled."""
    if len(set(np.asarray(y_labelled).tolist())) < 2:
        raise FeatstoreError("--strategy uncertain needs labelled items of at least two classes to fit a head on; "
                             "label a first batch (e.g. chosen with --strategy diverse) first")
    proba = LogisticRegressionHead(C=HEAD_C).fit(X_labelled, y_labelled).predict_proba(X)
    top = np.sort(proba, axis=1)
    margin = top[:, -1] - top[:, -2]
    order = np.argsort(margin, kind="stable")[:n]
    return order, margin[order]


def typical(X: np.ndarray, typicality: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n most typical rows, each at cosine < NEAR_COPY to those picked before it."""
    picks: list[int] = []
    for i in np.argsort(-typicality, kind="stable"):
        if not picks or float(np.max(X[picks] @ X[i])) < NEAR_COPY:
            picks.append(int(i))
            if len(picks) == n:
                break
    return np.asarray(picks, np.int64)


def select(store: Store, task: str | None, n: int, strategy: str = "diverse", seed: int = 0,
           model: str | None = None, include_labelled: bool = False, log=lambda msg: None) -> dict:
    """The n items (fewer, with a note, when fewer are eligible) to label next in `task`, by `strategy`."""
    if strategy not in STRATEGIES:
        raise one_of("strategy", strategy, STRATEGIES)
    if n < 1:
        raise FeatstoreError(f"-n must be at least 1, got {n}")
    task = task_for(store, task, required=True)
    s = store.set_for_task(task, model)
    lab_hashes, X_lab, y_lab = store.labelled(s, task)
    vec_of = dict(store.con.execute(f"SELECT hash, vec_id FROM {s.table}").fetchall())
    labelled_ids = {vec_of[h] for h in lab_hashes}
    excluded_ids = {vec_of[h] for (h,) in store.con.execute(     # excluded from fitting (featstore exclude): not
        f"SELECT DISTINCT i.hash FROM items i JOIN {store.relation('exclusions')} x ON x.path = i.path").fetchall()
        if h in vec_of}                                           # offered for labelling either
    live = store.live_ids(s)
    skip = excluded_ids if include_labelled else labelled_ids | excluded_ids
    pool = np.array([v for v in live.tolist() if v not in skip], np.int64)
    eligible = "items" + ("" if include_labelled else f" without a {task!r} label")
    if not len(pool):
        raise FeatstoreError(f"no {eligible} to choose from"
                             + ("" if include_labelled else " (--include-labelled chooses among all)"))
    note = None
    if n > len(pool):
        note = f"-n {n}: only {len(pool)} {eligible} were eligible; all {len(pool)} are returned"
    k = min(n, len(pool))
    X = StoreVectors(store, s).fetch(pool)
    if strategy == "diverse":
        picks, scores = diverse(X, k, seed), None
    elif strategy == "uncertain":
        picks, scores = uncertain(X, X_lab, y_lab.astype(str), k)
    else:
        knn_graph.graph(store, s, log=log)
        ids, _, cos = knn_graph.read_graph(store, s)
        row = {int(v): i for i, v in enumerate(ids)}
        valid = np.isfinite(cos)
        mean = np.where(valid, cos, 0).sum(1) / np.maximum(valid.sum(1), 1)
        typ = np.array([mean[row[int(v)]] for v in pool])
        picks = typical(X, typ, k)
        scores = typ[picks]
    info = store.describe_vecs(s, pool[picks].tolist(), task)
    items = [{"rank": r + 1, "item_id": info[int(v)]["item_id"], "path": info[int(v)]["path"],
              "label": info[int(v)]["label"], "score": None if scores is None else round(float(scores[r]), 6)}
             for r, v in enumerate(pool[picks].tolist())]
    return {"task": task, "model": s.model, "set_id": s.set_id, "strategy": strategy, "n": n, "seed": seed,
            "pool": int(len(pool)), "include_labelled": include_labelled, "note": note, "items": items}
