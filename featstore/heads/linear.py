"""Other linear heads on standardised features: linear SVM and ridge (classifier and regressor).

Their decision values are not probabilities; predict_proba is softmax(beta * decision values), with the inverse
temperature beta fitted by scikit-learn's CalibratedClassifierCV(method="temperature", ensemble=False): the
log-loss of out-of-fold decision values on the data given to fit(), so the training part only. One scalar folded
into the dense step (the program stays standardise -> dense -> softmax, so export is unchanged), and the label is
the classifier's own (a temperature never reorders classes). With too few examples per class to cross-validate
there is no calibration (beta = 1) and search_["calibration"] says so.
"""
from __future__ import annotations

import time

import numpy as np

from .base import (ProgramClassifier, ProgramRegressor, as_columns, cv_folds, record_search, split_folds,
                   standardiser)
from .program import Step, dense, standardise

SVM_CS = (1e-4, 1e-3, 1e-2, 1e-1)
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


class LinearSVMHead(ProgramClassifier):
    """Standardise + one-vs-rest linear SVM (liblinear); C by stratified k-fold CV on the data given to fit()."""

    def __init__(self, Cs=SVM_CS, cv=3, seed=0):
        self.Cs = Cs
        self.cv = cv
        self.seed = seed

    def _fit(self, X, yi, n_classes):
        from sklearn.svm import LinearSVC

        t0 = time.perf_counter()
        mean, scale = standardiser(X)
        Z = ((X - mean) / scale).astype(np.float32)
        grid = sorted(self.Cs)
        folds = cv_folds(yi, self.cv)
        scores = None
        if folds:
            scores = np.zeros(len(grid))
            for tr, va in split_folds(yi, folds, self.seed):
                for j, C in enumerate(grid):
                    svm = LinearSVC(C=C, dual=True, max_iter=5000, random_state=self.seed).fit(Z[tr], yi[tr])
                    scores[j] += np.mean(svm.predict(Z[va]) == yi[va]) / folds
            C = grid[int(np.argmax(scores))]
        else:
            C = grid[len(grid) // 2]
        svm, beta, how = _calibrated(LinearSVC(C=C, dual=True, max_iter=5000, random_state=self.seed), Z, yi, folds, self.seed)
        record_search(self, "C", grid, scores, C, folds, time.perf_counter() - t0)
        self.search_["calibration"] = how
        return [standardise(mean, scale), _scaled_dense(svm, beta), Step("softmax")]


class RidgeHead(ProgramClassifier):
    """Standardise + ridge classifier; alpha by efficient leave-one-out (generalised CV) on the data given."""

    def __init__(self, alphas=RIDGE_ALPHAS, cv=5, seed=0):
        self.alphas = alphas
        self.cv = cv
        self.seed = seed

    def _fit(self, X, yi, n_classes):
        from sklearn.linear_model import RidgeClassifierCV

        t0 = time.perf_counter()
        mean, scale = standardiser(X)
        model, beta, how = _calibrated(RidgeClassifierCV(alphas=self.alphas), (X - mean) / scale, yi,
                                       cv_folds(yi, self.cv), self.seed)
        record_search(self, "alpha", self.alphas, None, model.alpha_, 0, time.perf_counter() - t0,
                      method="leave-one-out (GCV)")
        self.search_["calibration"] = how
        return [standardise(mean, scale), _scaled_dense(model, beta), Step("softmax")]


def _calibrated(estimator, Z, yi, folds: int, seed: int):
    """(estimator fitted on all of Z, inverse temperature beta, how it was calibrated)."""
    if not folds:
        return estimator.fit(Z, yi), 1.0, "none (too few examples per class to cross-validate)"
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    model = CalibratedClassifierCV(estimator, method="temperature", cv=cv, ensemble=False).fit(Z, yi)
    pair = model.calibrated_classifiers_[0]
    return pair.estimator, float(pair.calibrators[0].beta_), f"temperature, {folds}-fold CV"


def _scaled_dense(model, beta: float) -> Step:
    """dense step whose softmax is scikit-learn's temperature-scaled probabilities: softmax(beta * decision)
    (two classes: logits (-z, z), and as_columns keeps (-z/2, z/2), hence 2 beta)."""
    weight, bias = as_columns(model.coef_, model.intercept_)
    beta = 2 * beta if np.atleast_2d(model.coef_).shape[0] == 1 else beta
    return dense(weight * beta, bias * beta)


class RidgeRegressionHead(ProgramRegressor):
    """Standardise + ridge regression for numeric targets; alpha by efficient leave-one-out (GCV)."""

    def __init__(self, alphas=RIDGE_ALPHAS):
        self.alphas = alphas

    def _fit(self, X, y):
        from sklearn.linear_model import RidgeCV

        t0 = time.perf_counter()
        mean, scale = standardiser(X)
        model = RidgeCV(alphas=self.alphas).fit((X - mean) / scale, y)
        record_search(self, "alpha", self.alphas, None, model.alpha_, 0, time.perf_counter() - t0,
                      method="leave-one-out (GCV)")
        return [standardise(mean, scale), dense(np.asarray(model.coef_).reshape(-1, 1), [model.intercept_])]
