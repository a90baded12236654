"""Other linear heads on standardised features: linear SVM and ridge (classifier and regressor).

Their scores are not calibrated probabilities: predict_proba is the softmax of the decision values, which
ranks classes the same way (the label is right; read the number as a score).
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
        svm = LinearSVC(C=C, dual=True, max_iter=5000, random_state=self.seed).fit(Z, yi)
        record_search(self, "C", grid, scores, C, folds, time.perf_counter() - t0)
        return [standardise(mean, scale), dense(*as_columns(svm.coef_, svm.intercept_)), Step("softmax")]


class RidgeHead(ProgramClassifier):
    """Standardise + ridge classifier; alpha by efficient leave-one-out (generalised CV) on the data given."""

    def __init__(self, alphas=RIDGE_ALPHAS):
        self.alphas = alphas

    def _fit(self, X, yi, n_classes):
        from sklearn.linear_model import RidgeClassifierCV

        t0 = time.perf_counter()
        mean, scale = standardiser(X)
        model = RidgeClassifierCV(alphas=self.alphas).fit((X - mean) / scale, yi)
        record_search(self, "alpha", self.alphas, None, model.alpha_, 0, time.perf_counter() - t0,
                      method="leave-one-out (GCV)")
        return [standardise(mean, scale), dense(*as_columns(model.coef_, model.intercept_)), Step("softmax")]


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
