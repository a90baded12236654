"""Heads: classifiers trained on cached features (never the backbone), evaluated honestly, stored without pickle."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from .errors import FeatstoreError, one_of
from .store import Store

SEED = 0
TEST_FRACTION = 0.2
CV_FOLDS = 5
HEAD_KINDS = ("logreg",)


@dataclass
class LinearHead:
    """softmax(((x - mean) / scale) @ coef.T + intercept): a standardised linear classifier as plain arrays."""

    classes: list
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray        # (n_classes, dim)
    intercept: np.ndarray   # (n_classes,)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(X).argmax(axis=1)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}


def _pipeline(C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def fit_logreg(X: np.ndarray, y: np.ndarray, C: float = 0.1) -> LinearHead:
    """Standardise, then multinomial logistic regression (lbfgs), returned as a LinearHead."""
    pipe = _pipeline(C).fit(X, y)
    scaler, lr = pipe.steps[0][1], pipe.steps[1][1]
    coef, intercept = lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64)
    if len(lr.classes_) == 2:   # sklearn keeps one row for two classes; softmax([-z/2, z/2]) == sigmoid(z)
        coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    return LinearHead(classes=[str(c) for c in lr.classes_], mean=scaler.mean_.astype(np.float64),
                      scale=scaler.scale_.astype(np.float64), coef=coef, intercept=intercept)


def evaluate(X: np.ndarray, y: np.ndarray, C: float = 0.1, seed: int = SEED) -> tuple[LinearHead, dict]:
    """Stratified held-out split (fixed seed), k-fold CV on the training part, test metrics; returns the head
    fitted on the training part (the one the metrics describe) and the report."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise FeatstoreError(f"a head needs at least two classes; this task has {len(classes)}")
    rare = [str(c) for c, n in zip(classes, counts) if n < 2]
    if rare:
        raise FeatstoreError(f"classes with fewer than 2 examples cannot be split for evaluation: {', '.join(rare)}")
    n_test = max(int(round(TEST_FRACTION * len(y))), len(classes))
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=n_test, stratify=y, random_state=seed)
    folds = int(min(CV_FOLDS, np.unique(y_tr, return_counts=True)[1].min()))
    cv = None
    if folds >= 2:
        t0 = time.perf_counter()
        scores = cross_val_score(_pipeline(C), X_tr, y_tr, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        cv = {"folds": folds, "accuracy_mean": float(scores.mean()), "accuracy_std": float(scores.std()),
              "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    head = fit_logreg(X_tr, y_tr, C=C)
    fit_seconds = time.perf_counter() - t0
    pred = head.predict(X_te)
    labels = [str(c) for c in classes]
    prec, rec, f1, support = precision_recall_fscore_support(y_te, pred, labels=labels, zero_division=0)
    report = {
        "n_train": int(len(y_tr)), "n_test": int(len(y_te)), "seed": seed, "test_fraction": TEST_FRACTION,
        "cv": cv, "fit_seconds": fit_seconds,
        "test_accuracy": float(accuracy_score(y_te, pred)),
        "test_macro_f1": float(f1_score(y_te, pred, average="macro", labels=labels, zero_division=0)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(labels, prec, rec, f1, support)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_te, pred, labels=labels).tolist()},
    }
    return head, report


def save_head(store: Store, name: str, head: LinearHead, task: str, set_id: str, params: dict, metrics: dict) -> None:
    """Store a head as JSON + plain float arrays (no pickle: opening an untrusted store runs no code)."""
    with store.transaction():
        store.con.execute("DELETE FROM head_arrays WHERE head = ?", [name])
        store.con.execute("DELETE FROM heads WHERE name = ?", [name])
        store.con.execute("INSERT INTO heads (name, kind, task, set_id, classes, params, metrics) "
                          "VALUES (?, 'logreg', ?, ?, ?, ?, ?)",
                          [name, task, set_id, json.dumps(head.classes), json.dumps(params), json.dumps(metrics)])
        for key, arr in head.arrays().items():
            store.con.execute("INSERT INTO head_arrays VALUES (?, ?, ?, ?)",
                              [name, key, list(arr.shape), arr.ravel().astype(np.float64).tolist()])


def head_names(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT name FROM heads ORDER BY name").fetchall()]


def load_head(store: Store, name: str) -> tuple[LinearHead, dict]:
    """A stored head and its record (kind, task, set_id, params, metrics)."""
    row = store.con.execute("SELECT kind, task, set_id, classes, params, metrics, created_at FROM heads "
                            "WHERE name = ?", [name]).fetchone()
    if row is None:
        raise one_of("head", name, head_names(store))
    if row[0] not in HEAD_KINDS:
        raise FeatstoreError(f"head {name!r} is of kind {row[0]!r}, which this featstore cannot run")
    arrays = {k: np.asarray(d, dtype=np.float64).reshape(shape) for k, shape, d in store.con.execute(
        "SELECT name, shape, data FROM head_arrays WHERE head = ?", [name]).fetchall()}
    head = LinearHead(classes=json.loads(row[3]), **arrays)
    record = {"name": name, "kind": row[0], "task": row[1], "set_id": row[2], "params": json.loads(row[4]),
              "metrics": json.loads(row[5]), "created_at": str(row[6])}
    return head, record


def fit_head(store: Store, task: str, model: str | None = None, name: str | None = None, kind: str = "logreg",
             C: float = 0.1) -> dict:
    """Fit a head for a task on the cached features of one embedding set, evaluate it, store it."""
    if kind not in HEAD_KINDS:
        raise one_of("head kind", kind, HEAD_KINDS)
    s = store.pick_set(model)
    t0 = time.perf_counter()
    hashes, X, y = store.labelled(s, task)
    load_seconds = time.perf_counter() - t0
    head, report = evaluate(X, y, C=C)
    name = name or task
    report["load_seconds"] = load_seconds
    params = {"C": C, "standardise": True, "solver": "lbfgs", "seed": SEED}
    save_head(store, name, head, task, s.set_id, params, report)
    return {"name": name, "kind": kind, "task": task, "model": s.model, "set_id": s.set_id,
            "n_items": len(hashes), "classes": head.classes, "params": params, "metrics": report}
