"""Logistic regression with its regularisation chosen by cross-validation, fast enough to re-run at will.

The linear-probe protocol (CLIP, DINOv2): standardise, multinomial logistic regression with an L2 penalty, the
penalty swept on the training split. Stock `LogisticRegressionCV` takes ~15 s on 720 x 1280 features; this one
takes about 0.6 s of one core for the same 8 values x 5 folds because
  * it solves in the smaller of the sample and feature dimensions: with an L2 penalty the weights lie in the
    span of the training rows, so with n < d the problem is rewritten exactly on the n x n Gram matrix
    (F from its pivoted Cholesky factorisation, G = F F^T: a tenth of the cost of an eigendecomposition; the
    solution does not depend on which factor is used, ||W|| = ||B||), and mapped back to d weights at the end;
  * it walks the regularisation path from strong to weak, warm-starting each solve from the previous one;
  * the cross-validation solves, which only rank the C values, run their matrix products in float32 (half the
    memory traffic of the loss-and-gradient step, whose operands then stay in cache); the final fit is solved in float64;
  * small problems run with one BLAS thread, the whole fit (threads cost more than they save at this size, and
    on a busy machine a multi-threaded call waits for its descheduled thread; large problems keep every thread).
The objective is scikit-learn's (C * sum of log-losses + |W|^2 / 2), so C means the same thing.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.linalg import lapack, solve_triangular
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from .base import ProgramClassifier, cv_folds, record_search, split_folds, standardiser
from .program import Step, dense, standardise

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 1, 8))
FALLBACK_C = DEFAULT_CS[3]      # used when there are too few examples per class to cross-validate
SMALL_PROBLEM = 4_000_000       # X (or F) entries below which the fit (the L-BFGS steps) runs single-threaded


class LogisticRegressionHead(ProgramClassifier):
    """Standardise + multinomial L2 logistic regression; C by stratified k-fold CV on the data given to fit(),
    the value with the lowest mean held-out log-loss.

    C: a fixed value skips the search. Cs: the grid searched (ascending). cv: folds. tol: L-BFGS gradient
    tolerance on the mean loss."""

    def __init__(self, Cs=DEFAULT_CS, C=None, cv=5, seed=0, tol=1e-4, max_iter=1000):
        self.Cs = Cs
        self.C = C
        self.cv = cv
        self.seed = seed
        self.tol = tol
        self.max_iter = max_iter

    def _fit(self, X, yi, n_classes):
        # the whole fit, not only the L-BFGS steps: the Gram products and eigendecompositions of each fold are
        # small too, and a multi-threaded BLAS call waits on its slowest thread, which a busy machine deschedules
        # (measured: 72 s wall / 14 s CPU with 2 BLAS threads beside other work, against 12 s / 3 s with one)
        with threadpool_limits(1 if X.size < SMALL_PROBLEM else None, user_api="blas"):
            return self._fit_search(X, yi, n_classes)

    def _fit_search(self, X, yi, n_classes):
        t0 = time.perf_counter()
        grid = sorted(self.Cs)
        folds = cv_folds(yi, self.cv) if self.C is None else 0
        scores = losses = None
        if folds:
            scores, losses = np.zeros(len(grid)), np.zeros(len(grid))
            for tr, va in split_folds(yi, folds, self.seed):
                sol = _Reduced(X[tr])
                Fv = sol.project(X[va])
                F32 = sol.F.astype(np.float32)
                w = None
                for j, C in enumerate(grid):
                    w = _solve(F32, yi[tr], n_classes, C, w, self.tol, self.max_iter)
                    z = _scores(Fv, w, n_classes)
                    scores[j] += np.mean(z.argmax(1) == yi[va]) / folds
                    losses[j] += _log_loss(z, yi[va]) / folds
            # chosen by held-out log-loss, not accuracy: on small data accuracy ties over most of the grid and a
            # tie-break toward strong regularisation picks a C whose probabilities are nearly flat
            C = grid[int(np.argmin(losses))]
        else:
            C = self.C if self.C is not None else FALLBACK_C
        sol = _Reduced(X)
        w, self.n_iter_ = _solve(sol.F, yi, n_classes, C, None, self.tol, self.max_iter, return_n_iter=True)
        B, b = _unpack(w, sol.F.shape[1], n_classes)
        record_search(self, "C", grid if folds else [C], scores, C, folds, time.perf_counter() - t0)
        if losses is not None:
            self.search_["cv_log_loss"] = [float(v) for v in losses]
        self.C_ = C
        return [standardise(sol.mean, sol.scale), dense(sol.to_features(B), b), Step("softmax")]


class _Reduced:
    """Standardised training rows, rewritten in min(n, d) dimensions (exactly, see the module docstring)."""

    def __init__(self, X: np.ndarray):
        self.mean, self.scale = standardiser(X)
        Z = (X - self.mean) / self.scale
        n, d = Z.shape
        if n >= d:
            self.F, self.Z, self.W = Z, None, None
            return
        G = Z @ Z.T
        # P^T G P = L L^T, L lower triangular, its first r columns nonzero (r: the numerical rank; standardising
        # removes one dimension). F = P L[:, :r] and W = P [L11^-T; 0] give Z V = G W = F with V = Z^T W
        # orthonormal (V^T V = W^T G W = I), so Z = F V^T on the training rows
        L, piv, r, info = lapack.dpstrf(G, lower=1, tol=float(np.diag(G).max()) * 1e-10)
        if info < 0:
            raise ValueError(f"pivoted Cholesky failed (LAPACK info {info})")
        order = piv - 1
        Lr = np.tril(L)[:, :r]
        self.F = np.empty((n, r))
        self.F[order] = Lr
        self.W = np.zeros((n, r))
        self.W[order[:r]] = solve_triangular(Lr[:r], np.eye(r), lower=True, trans="T")
        self.Z = Z                                         # V itself (d x r) is formed only when needed

    def project(self, X: np.ndarray) -> np.ndarray:
        Zq = (X - self.mean) / self.scale
        return Zq if self.Z is None else (Zq @ self.Z.T) @ self.W     # == Zq V, without forming V

    def to_features(self, B: np.ndarray) -> np.ndarray:
        return B if self.Z is None else self.Z.T @ (self.W @ B)       # == V B


def _unpack(w: np.ndarray, r: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return w[:r * k].reshape(r, k), w[r * k:]


def _scores(F: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    B, b = _unpack(w, F.shape[1], k)
    return F @ B + b


def _log_loss(z: np.ndarray, yi: np.ndarray) -> float:
    """Mean multinomial log-loss of scores z (rows: items) for true class indices yi."""
    zmax = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    return float(np.mean(lse - z[np.arange(len(yi)), yi]))


def _solve(F: np.ndarray, yi: np.ndarray, k: int, C: float, w0, tol: float, max_iter: int,
           return_n_iter: bool = False):
    """argmin mean log-loss + |B|^2 / (2 C n) by L-BFGS (== scikit-learn's objective divided by C n).

    F's dtype sets the precision of the two matrix products (float32 for the search, float64 for the final fit);
    the loss, the gradient and the optimiser's state stay float64.

    return_n_iter: also return the number of L-BFGS iterations (the estimator's n_iter_)."""
    n, r = F.shape
    Y = np.zeros((n, k))
    Y[np.arange(n), yi] = 1
    FT = np.ascontiguousarray(F.T)
    a = 1.0 / (C * n)

    def loss_grad(w):
        B, b = _unpack(w, r, k)
        z = (F @ B.astype(F.dtype)).astype(np.float64) + b
        zmax = z.max(axis=1, keepdims=True)
        e = np.exp(z - zmax)
        se = e.sum(axis=1, keepdims=True)
        loss = (np.log(se) + zmax).sum() / n - (z * Y).sum() / n + 0.5 * a * (B * B).sum()
        D = (e / se - Y) / n
        g = np.empty_like(w)
        g[:r * k] = ((FT @ D.astype(F.dtype)) + a * B).ravel()
        g[r * k:] = D.sum(axis=0)
        return loss, g

    w0 = np.zeros(r * k + k) if w0 is None else w0
    # (the caller, _fit, has already limited BLAS threads for the whole fit: a limit per solve cost ~6 ms each)
    res = minimize(loss_grad, w0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": tol})
    return (res.x, int(res.nit)) if return_n_iter else res.x
