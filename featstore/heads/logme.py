"""LogME: how well a set of features will serve a classification task, from the features alone, in seconds.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021
(arXiv:2102.11005). For each class c, the one-vs-rest target y = [label == c] is modelled as a Bayesian linear
regression on the features, y ~ N(F w, 1/beta), w ~ N(0, I/alpha); alpha and beta are set by evidence
maximisation (MacKay's fixed-point updates) and the score is the log marginal evidence per item, averaged over
classes. Higher is better; it is comparable across feature sets of one task, not across tasks.

The SVD trick: with F = U S V^T (from the eigendecomposition of the smaller of F F^T and F^T F, done once),
every iteration is O(k) with k = min(N, D):
    gamma = sum(beta s_i^2 / (alpha + beta s_i^2)),  m = V diag(beta s / (alpha + beta s^2)) U^T y,
    |y - F m|^2 = |y|^2 - |U^T y|^2 + sum((alpha / (alpha + beta s^2))^2 (U^T y)^2).
"""
from __future__ import annotations

import numpy as np

MAX_ITERATIONS = 11      # as in the paper's reference implementation
TOLERANCE = 0.01         # relative change of lambda = alpha / beta that ends the fixed-point iteration


def logme(features: np.ndarray, labels) -> float:
    """The LogME score of features (N, D) for class labels (N,) (any hashable labels; at least two classes)."""
    F = np.asarray(features, dtype=np.float64)
    if F.ndim != 2 or len(F) != len(labels):
        raise ValueError(f"logme needs features (N, D) and N labels; got {F.shape} and {len(labels)} labels")
    _, yi = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    if yi.max() < 1:
        raise ValueError("logme needs at least two classes")
    n, d = F.shape
    if n <= d:                                       # F = U S V^T from the smaller Gram matrix
        sigma, U = np.linalg.eigh(F @ F.T)           # (N x N): sigma = s^2, U the left singular vectors

        def project(y):
            return U.T @ y
    else:
        sigma, V = np.linalg.eigh(F.T @ F)           # (D x D): U = F V / s on the non-zero singular values
        keep = sigma > sigma.max() * 1e-12
        sigma, V = sigma[keep], V[:, keep]
        scale = 1 / np.sqrt(sigma)

        def project(y):
            return scale * (V.T @ (F.T @ y))
    sigma = np.clip(sigma, 0, None)                  # eigenvalues of F^T F (the other D - k are zero)
    targets = [(yi == c).astype(np.float64) for c in range(yi.max() + 1)]
    return float(np.mean([_evidence(project(t), float(t @ t), sigma, n, d) for t in targets]))


def _evidence(uy: np.ndarray, y2: float, sigma: np.ndarray, n: int, d: int) -> float:
    """Maximised log evidence per item of one 0/1 target y from uy = U^T y and y2 = |y|^2 (the paper's
    Algorithm 1 in its SVD form)."""
    uy2 = uy ** 2
    outside = max(float(y2 - uy2.sum()), 0.0)        # |y|^2 outside F's column space: no w can fit it
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(MAX_ITERATIONS):
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m2 = float((beta ** 2 * sigma * uy2 / (alpha + beta * sigma) ** 2).sum())          # |m|^2
        res2 = outside + float(((alpha / (alpha + beta * sigma)) ** 2 * uy2).sum())       # |y - F m|^2
        alpha = gamma / max(m2, 1e-300)
        beta = (n - gamma) / max(res2, 1e-300)
        new_lam = alpha / beta
        done = abs(new_lam - lam) / lam < TOLERANCE
        lam = new_lam
        if done:
            break
    m2 = float((beta ** 2 * sigma * uy2 / (alpha + beta * sigma) ** 2).sum())
    res2 = outside + float(((alpha / (alpha + beta * sigma)) ** 2 * uy2).sum())
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * log_det - beta / 2 * res2 - alpha / 2 * m2
                - n / 2 * np.log(2 * np.pi))
    return evidence / n
