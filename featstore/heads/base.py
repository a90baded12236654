"""What every head shares: the scikit-learn estimator contract on top of a fitted Program.

Input is checked here, once, with scikit-learn's own validation (validate_data, check_classification_targets):
finite dense 2-D float X, y of matching length and 1-D (a column vector warns), a classifier's y must be class
labels (a continuous y is refused), predict needs a fitted head and the number of features it was fitted on."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .program import Program


class ProgramClassifier(ClassifierMixin, BaseEstimator):
    """fit() sets classes_, program_ and search_ (the hyperparameters tried and chosen); inference runs program_.

    Subclasses implement `_fit(X, y_index, n_classes) -> Program-less steps`; see logreg.py for an example.
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"a classifier needs at least two classes; y has {len(self.classes_)} class")
        self.search_ = {}
        steps = self._fit(X, yi, len(self.classes_))
        self.program_ = Program(steps, [str(c) for c in self.classes_], "classification")
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "program_")
        return self.program_.run(validate_data(self, X, reset=False, dtype=np.float32))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class ProgramRegressor(RegressorMixin, BaseEstimator):
    """The regression twin: one numeric target, the program's single output column is the prediction."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self.search_ = {}
        self.program_ = Program(self._fit(X, y), ["target"], "regression")
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "program_")
        return self.program_.run(validate_data(self, X, reset=False, dtype=np.float32))[:, 0]


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and a shrunk scale, sqrt(var + mean var).

    Plain standardisation divides by each feature's own spread, which a handful of examples estimates badly
    (a feature that happens not to vary is blown up). Adding the average feature variance keeps the scales of
    well-estimated features nearly as they are and tames the rest. Measured on flowers (Lite0, 3 seeded splits):
    held-out accuracy equal or better for every head, and few-shot logistic regression 1-shot 30% -> 42%,
    2-shot 38% -> 59%."""
    X = np.asarray(X, dtype=np.float64)
    var = X.var(axis=0)
    return X.mean(axis=0), np.sqrt(var + max(float(var.mean()), 1e-12))


def cv_folds(yi: np.ndarray, folds: int) -> int:
    """How many stratified folds the rarest class allows (0 when cross-validation is impossible)."""
    n = int(min(folds, np.bincount(yi).min()))
    return n if n >= 2 else 0


def split_folds(yi: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(yi)), yi))


def record_search(est, name: str, grid, scores: np.ndarray | None, chosen, folds: int, seconds: float,
                  method: str | None = None) -> None:
    """Keep what the hyperparameter search tried and chose, and how it chose (reported and stored with the
    head): `method` names it; by default "N-fold CV" with folds, else "fixed" for a one-value grid."""
    if method is None:
        method = f"{folds}-fold CV" if folds and scores is not None else ("fixed" if len(grid) == 1 else "search")
    est.search_ = {"param": name, "grid": [float(g) for g in grid], "chosen": float(chosen), "folds": folds,
                   "seconds": round(seconds, 4), "method": method,
                   "cv_accuracy": None if scores is None else [float(s) for s in scores]}


def as_columns(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn linear classifier (coef_, intercept_) -> dense (weight, bias) with one column per class.

    Two-class models keep one row; [-z/2, z/2] gives the same argmax (and softmax == sigmoid(z))."""
    coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    return coef.T, intercept
