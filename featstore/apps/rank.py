"""Which backbone, which cut: every feature set holding a task scored by LogME (heads/logme.py) from the cached
features, beside the held-out accuracy of the heads stored on it, and how well the score orders the sets that
have both (Kendall's tau).

Feature sets: every embedding set with vectors for the task's labelled items, and every set of cut activations
(global-average-pooled, view 0 only: the plain preprocessing). Scores use the training part of the task's stored
split only, so nothing of the held-out part is looked at to choose a backbone.
"""
from __future__ import annotations

import time

import numpy as np

from featstore.errors import FeatstoreError, one_of
from featstore.heads.evaluate import main_metric
from featstore.heads.logme import logme
from featstore.heads.storage import head_records
from featstore.store.db import Store


def rank(store: Store, task: str, log=lambda _msg: None) -> dict:
    """{"task", "rows": [{"features", "kind", "model", "cut", "dim", "n", "logme", "seconds", "accuracy",
    "head", "head_kind"}], best LogME first, "kendall_tau", "p_value", "n_compared"}."""
    from featstore.heads.fit import load_task

    if task not in store.tasks():
        raise one_of("task", task, store.tasks())
    heads = [h for h in head_records(store) if h["task"] == task]
    rows = []
    for s in store.sets():
        if not store.labelled_count(s, task):
            continue
        data = load_task(store, task, s.set_id, "class")
        X, y = data.train
        rows.append(_row(f"{s.set_id}", "embedding", s.model, "-", X, y, [h for h in heads if h["set_id"] == s.set_id
                                                                      and h["kind"] != "finetune"], log))
        for aset in _activation_sets(store, s.set_id):
            Xa = _pooled_activations(store, aset, [h for h, t in zip(data.hashes, data.test) if not t])
            if Xa is None:
                continue
            rows.append(_row(aset.act_id, "activations", aset.model, aset.cut, Xa, y,
                             [h for h in heads if h["params"].get("act_id") == aset.act_id], log))
    if not rows:
        raise FeatstoreError(f"task {task!r} has no embedded items in this store: run `featstore embed` first")
    rows.sort(key=lambda r: -r["logme"])
    both = [r for r in rows if r["accuracy"] is not None]
    tau = p = None
    if len(both) >= 2:
        from scipy.stats import kendalltau

        res = kendalltau([r["logme"] for r in both], [r["accuracy"] for r in both])
        tau = None if np.isnan(res.statistic) else float(res.statistic)
        p = None if np.isnan(res.pvalue) else float(res.pvalue)
    return {"task": task, "rows": rows, "kendall_tau": tau, "p_value": p, "n_compared": len(both),
            "score": "LogME (You et al., ICML 2021): log evidence per item, one-vs-rest, averaged over classes; "
                     "training part of the stored split"}


def _row(features: str, kind: str, model: str, cut: str, X: np.ndarray, y: np.ndarray, heads: list[dict],
         log) -> dict:
    t0 = time.perf_counter()
    score = logme(X, y)
    seconds = time.perf_counter() - t0
    log(f"{features} ({model}, {cut}): LogME {score:.4f} in {seconds:.2f} s")
    best = None
    for h in heads:
        metric, value = main_metric(h["metrics"])
        if metric == "accuracy" and value is not None and (best is None or value > best[1]):
            best = (h, value)
    return {"features": features, "kind": kind, "model": model, "cut": cut, "dim": int(X.shape[1]), "n": len(y),
            "logme": score, "seconds": seconds, "accuracy": None if best is None else best[1],
            "head": None if best is None else best[0]["name"], "head_kind": None if best is None else best[0]["kind"]}


def _activation_sets(store: Store, set_id: str) -> list:
    from featstore.store.activations import activation_sets

    return [a for a in activation_sets(store) if a.set_id == set_id]


def _pooled_activations(store: Store, aset, hashes: list[str]) -> np.ndarray | None:
    """Global-average-pooled view-0 activations (N, channels) of the hashes, in their order; None if the set
    lacks some of them (partly embedded with --cut)."""
    from featstore.store.activations import read_activations

    try:
        got = read_activations(store, aset, hashes, views=False)
    except FeatstoreError:
        return None
    return pool_activations(got["x"][:, 0], got.get("mask"))


def pool_activations(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(N, C, H, W) image activations -> mean over H, W; (N, T, D) token activations -> mean over unmasked T."""
    x = np.asarray(x, dtype=np.float32)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)[:, :, None]
        return (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    return x.reshape(len(x), x.shape[1], -1).mean(axis=2)
