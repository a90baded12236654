"""Label issues by confident learning on two independent views of each item's class: out-of-fold probabilities
of the task's logistic-regression head (k-fold on the cached features), and the labels of its nearest
neighbours in the kNN graph. Their mean goes to cleanlab (Northcutt et al., confident learning), which flags the
items whose given label the evidence contradicts and ranks them by self-confidence."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.heads.base import cv_folds, split_folds
from featstore.heads.logreg import LogisticRegressionHead

OOF_FOLDS = 5
OOF_C = 0.01           # fixed inside the folds (no nested search): close to what the CV picks on Lite0 features
KNN_SMOOTHING = 1.0    # pseudo-count spread over the classes: a few neighbours give soft, not 0/1, probabilities
KNN_WEIGHT = 0.5       # share of the kNN view in the combined probabilities
INSTALL = "pip install 'featstore[audit]'"


def out_of_fold_probs(X: np.ndarray, yi: np.ndarray, n_classes: int, folds: int = OOF_FOLDS, seed: int = 0,
                      C: float = OOF_C) -> np.ndarray:
    """(n, classes) probabilities, each row from a head that never saw that item (stratified folds)."""
    folds = cv_folds(yi, folds) or 2
    out = np.zeros((len(yi), n_classes))
    for tr, va in split_folds(yi, folds, seed):
        est = LogisticRegressionHead(C=C, seed=seed).fit(X[tr], yi[tr])
        out[np.ix_(va, est.classes_.astype(int))] = est.predict_proba(X[va])
    return out


def knn_label_probs(nbr: np.ndarray, cos: np.ndarray, yi: np.ndarray, n_classes: int,
                    smoothing: float = KNN_SMOOTHING) -> np.ndarray:
    """(n, classes): the similarity-weighted labels of each item's neighbours. nbr holds row positions into yi
    (-1: no labelled neighbour there); the item itself is never among them."""
    w = np.where(nbr >= 0, np.clip(cos, 0, None), 0.0)
    votes = np.zeros((len(nbr), n_classes))
    rows = np.repeat(np.arange(len(nbr)), nbr.shape[1])
    ok = nbr.ravel() >= 0
    np.add.at(votes, (rows[ok], yi[nbr.ravel()[ok]]), w.ravel()[ok])
    return (votes + smoothing / n_classes) / (votes.sum(1, keepdims=True) + smoothing)


def combine(p_oof: np.ndarray, p_knn: np.ndarray, weight: float = KNN_WEIGHT) -> np.ndarray:
    return (1 - weight) * p_oof + weight * p_knn


def ranked_issues(yi: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flagged row positions, most likely first; every row's issue score, 1 - label quality) by cleanlab."""
    require_cleanlab()
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    flagged = find_label_issues(labels=yi, pred_probs=probs, return_indices_ranked_by="self_confidence")
    return np.asarray(flagged, np.int64), 1.0 - get_label_quality_scores(yi, probs, method="self_confidence")


def require_cleanlab() -> None:
    """One clear line, before any work, when cleanlab (the audit extra) is missing."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise FeatstoreError(f"label issues are scored with cleanlab, which is not installed: {INSTALL}") from None
    del find_label_issues
