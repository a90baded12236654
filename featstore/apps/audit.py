"""`featstore audit`: what is wrong with a labelled dataset, from the cached features and the set's kNN graph.

Findings, each a list ranked most striking first:
  * label_issues: items whose given label the evidence contradicts (label_issues.py: out-of-fold head
    probabilities + kNN label votes, scored by confident learning);
  * outliers: items far from everything else (uniqueness = 1 - mean cosine to their K nearest);
  * near_duplicates: groups of near-identical contents and exact copies (search/duplicates.py);
  * leakage: near-duplicates straddling the task's stored train / held-out split, and the held-out accuracy of
    a logistic-regression head with and without the held-out items that have a near-copy in training.
"""
from __future__ import annotations

import time

import numpy as np

from featstore.heads.fit import load_task
from featstore.heads.logreg import LogisticRegressionHead
from featstore.search import knn_graph
from featstore.search.duplicates import duplicates
from featstore.store.db import Store
from featstore.store.edits import save_audit_findings
from featstore.store.labels import task_for

from . import label_issues as li

DUPLICATE_THRESHOLD = 0.97


def vec_ids_of(store: Store, s, hashes: list[str]) -> np.ndarray:
    """The set's vec_id of each content hash, in the order given."""
    rows = dict(store.con.execute(f"SELECT hash, vec_id FROM {s.table} WHERE hash IN (SELECT unnest($1))",
                                  [list(hashes)]).fetchall())
    return np.array([rows[h] for h in hashes], np.int64)


def neighbours_among(graph_ids, nbr, cos, vec_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph rows of vec_ids with neighbours given as positions into vec_ids (-1: not among them)."""
    row_of = {int(v): i for i, v in enumerate(graph_ids)}
    pos = {int(v): i for i, v in enumerate(vec_ids)}
    rows = np.array([row_of[int(v)] for v in vec_ids], np.int64)
    sub_n, sub_c = nbr[rows], cos[rows]
    mapped = np.vectorize(lambda v: pos.get(int(v), -1), otypes=[np.int64])(sub_n) if sub_n.size else sub_n
    return mapped, np.where(mapped >= 0, sub_c, -np.inf)


def audit(store: Store, task: str, model: str | None = None, k: int = knn_graph.K,
          threshold: float = DUPLICATE_THRESHOLD, limit: int = 50, log=lambda msg: None) -> dict:
    t0 = time.perf_counter()
    li.require_cleanlab()
    task = task_for(store, task, required=True)
    data = load_task(store, task, model, "class")
    s = data.eset
    log("kNN graph ...")
    header = knn_graph.graph(store, s, k, log=log)
    graph_ids, nbr, cos = knn_graph.read_graph(store, s)
    vec_ids = vec_ids_of(store, s, data.hashes)
    classes, yi = np.unique(data.y, return_inverse=True)
    log("out-of-fold probabilities ...")
    p_oof = li.out_of_fold_probs(data.X, yi, len(classes))
    lab_nbr, lab_cos = neighbours_among(graph_ids, nbr, cos, vec_ids)
    p_knn = li.knn_label_probs(lab_nbr, lab_cos, yi, len(classes))
    probs = li.combine(p_oof, p_knn)
    flagged, scores = li.ranked_issues(yi, probs)
    info = store.describe_vecs(s, sorted(set(vec_ids.tolist()) | set(graph_ids.tolist())), task)
    issues = [{"item_id": info[int(vec_ids[i])]["item_id"], "path": info[int(vec_ids[i])]["path"],
               "given": str(classes[yi[i]]), "suggested": str(classes[int(probs[i].argmax())]),
               "score": round(float(scores[i]), 6), "head_probability_given": round(float(p_oof[i, yi[i]]), 6),
               "neighbours_agreeing": round(float(p_knn[i, yi[i]]), 6)} for i in flagged]
    dups = duplicates(store, threshold=threshold, task=task, model=s.set_id)
    out = {"task": task, "model": s.model, "set_id": s.set_id, "n_items": int(len(yi)),
            "classes": [str(c) for c in classes], "graph": header,
            "label_issues": issues, "outliers": _outliers(graph_ids, cos, info, limit),
            "near_duplicates": {"threshold": threshold, "exact": dups["exact"], "groups": dups["near_groups"]},
            "leakage": _leakage(store, data, dups["leakage"]),
            "method": {"oof_folds": li.OOF_FOLDS, "oof_C": li.OOF_C, "knn_k": k, "knn_weight": li.KNN_WEIGHT,
                       "scorer": "cleanlab.filter.find_label_issues (ranked by self_confidence)"},
            "seconds": round(time.perf_counter() - t0, 3)}
    if store.writable:          # kept for the web app and `label --accept`: the newest audit of the task
        save_audit_findings(store, task, findings(out))
    return out


def findings(out: dict) -> list[dict]:
    """An audit report as rows of findings (store/edits.py audit_findings): kind, rank, item_id, path, score,
    given, suggested, group, reason."""
    rows = [{"kind": "label_issue", "rank": r, "item_id": it["item_id"], "path": it["path"], "score": it["score"],
             "given": it["given"], "suggested": it["suggested"], "group": None,
             "reason": f"head probability of the given label {it['head_probability_given']:.3f}, "
                       f"neighbours agreeing {it['neighbours_agreeing']:.3f}"}
            for r, it in enumerate(out["label_issues"], 1)]
    rows += [{"kind": "outlier", "rank": r, "item_id": it["item_id"], "path": it["path"], "score": it["score"],
              "given": it["label"], "suggested": None, "group": None,
              "reason": "uniqueness (1 - mean cosine to its nearest)"} for r, it in enumerate(out["outliers"], 1)]
    for g, grp in enumerate(out["near_duplicates"]["groups"], 1):
        rows += [{"kind": "near_duplicate", "rank": g, "item_id": it["item_id"], "path": it["path"],
                  "score": grp["max_similarity"], "given": it["label"], "suggested": None, "group": g,
                  "reason": f"one of {grp['size']} near-identical items"} for it in grp["items"]]
    rows += [{"kind": "leakage", "rank": r, "item_id": None, "path": p["test"], "score": p["similarity"],
              "given": p["test_label"], "suggested": None, "group": r,
              "reason": f"held-out item with a near-copy in training: {p['train']}"}
             for r, p in enumerate(out["leakage"]["pairs"], 1)]
    return rows


def _outliers(graph_ids, cos, info: dict, limit: int) -> list[dict]:
    """Every vector's uniqueness (1 - mean cosine to its neighbours), the most unique first."""
    valid = np.isfinite(cos)
    mean = np.where(valid, cos, 0).sum(1) / np.maximum(valid.sum(1), 1)
    order = np.argsort(-(1 - mean), kind="stable")[:limit]
    return [{"item_id": info[int(graph_ids[i])]["item_id"], "path": info[int(graph_ids[i])]["path"],
             "label": info[int(graph_ids[i])]["label"], "score": round(float(1 - mean[i]), 6),
             "nearest_cosine": round(float(cos[i, 0]), 6) if valid[i, 0] else None}
            for i in order if int(graph_ids[i]) in info]


def _leakage(store: Store, data, leak: dict) -> dict:
    """The straddling pairs, and held-out accuracy with and without the held-out items that have a near-copy in
    training (a head fitted on the training part, C chosen by CV inside it)."""
    X_tr, y_tr = data.train
    X_te, y_te = data.held_out
    right = LogisticRegressionHead().fit(X_tr, y_tr).predict(X_te) == y_te
    leaked = {h for (h,) in store.con.execute("SELECT hash FROM items WHERE path IN (SELECT unnest($1))",
                                              [sorted({p["test"] for p in leak["pairs"]})]).fetchall()}
    keep = np.array([h not in leaked for h, t in zip(data.hashes, data.test) if t], bool)
    return {**leak, "accuracy": float(right.mean()) if len(right) else None,
            "accuracy_without_leaked": float(right[keep].mean()) if keep.any() else None,
            "held_out_without_leaked": int(keep.sum())}
