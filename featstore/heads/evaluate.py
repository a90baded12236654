"""Honest evaluation: a fixed held-out split per task, and the metrics reported for it.

The split is keyed by content hash (copies of one image can never straddle it), stratified by label (by
quantile bin for numeric targets), drawn with a fixed seed (scikit-learn's train_test_split) the first time a
head is fitted for the task, and stored. Items labelled later are assigned on top, per class, so the test share stays near TEST_FRACTION while
earlier assignments never move: every head fitted for the task is scored on the same held-out items.
"""
from __future__ import annotations

import time

import numpy as np

SEED = 0
TEST_FRACTION = 0.2


def assign_split(hashes: list[str], strata: np.ndarray, existing: dict[str, str],
                 seed: int = SEED, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """Split assignments for the hashes not in `existing`.

    First draw (nothing assigned yet): scikit-learn's stratified train_test_split with the fixed seed.
    Top-up (items labelled later): per stratum, enough new test items to bring its test share back to
    test_fraction; earlier assignments never move."""
    from sklearn.model_selection import train_test_split

    fresh_idx = [i for i, h in enumerate(hashes) if h not in existing]
    if not fresh_idx:
        return {}
    if not existing:
        n_test = max(int(round(test_fraction * len(hashes))), len(set(strata.tolist())))
        idx = np.arange(len(hashes))
        try:
            _, test_idx = train_test_split(idx, test_size=n_test, stratify=strata, random_state=seed)
        except ValueError:          # a stratum too small to stratify: fall back to the per-stratum rule below
            pass
        else:
            test = set(test_idx.tolist())
            return {h: "test" if i in test else "train" for i, h in enumerate(hashes)}
    rng = np.random.default_rng(seed)
    new: dict[str, str] = {}
    for stratum in sorted(set(strata.tolist()), key=str):
        members = [h for h, s in zip(hashes, strata) if s == stratum]
        fresh = sorted(h for h in members if h not in existing)
        if not fresh:
            continue
        have_test = sum(existing.get(h) == "test" for h in members)
        want = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            want = min(max(want, 1), len(members) - 1)
        n_test = int(np.clip(want - have_test, 0, len(fresh)))
        for rank, i in enumerate(rng.permutation(len(fresh))):
            new[fresh[i]] = "test" if rank < n_test else "train"
    return new


def strata_for(y: np.ndarray, task_type: str, bins: int = 5) -> np.ndarray:
    if task_type == "classification":
        return np.asarray(y).astype(str)
    edges = np.quantile(y.astype(float), np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y.astype(float)).astype(str)


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "test_balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "test_macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(labels, prec, rec, f1, support)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def regression_metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import mean_absolute_error, r2_score

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return {"test_r2": float(r2_score(y_true, y_pred)), "test_mae": float(mean_absolute_error(y_true, y_pred)),
            "test_rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2)))}


def main_metric(metrics: dict) -> tuple[str, float | None]:
    """The one number a leaderboard sorts by: held-out accuracy, or R^2 for regression."""
    if "test_r2" in metrics:
        return "r2", metrics["test_r2"]
    return "accuracy", metrics.get("test_accuracy")


def predictions_per_second(predict, X: np.ndarray, min_rows: int = 20000) -> float:
    """Throughput of a fitted head on cached features (batched, rows tiled up to min_rows)."""
    reps = max(1, -(-min_rows // max(len(X), 1)))
    big = np.tile(X, (reps, 1))
    predict(big[:10])
    t0 = time.perf_counter()
    predict(big)
    return len(big) / max(time.perf_counter() - t0, 1e-9)
