"""k-nearest-neighbours head: cosine similarity through FAISS, k chosen by leave-one-out on the training rows."""
from __future__ import annotations

import time

import numpy as np

from .base import ProgramClassifier, record_search
from .program import Step

KS = (1, 3, 5, 10, 20, 30)


class KNNHead(ProgramClassifier):
    """Similarity-weighted vote of the k most similar training items (cosine); the training rows are the model."""

    def __init__(self, ks=KS):
        self.ks = ks

    def _fit(self, X, yi, n_classes):
        from featstore import runtimes
        faiss = runtimes.faiss()

        t0 = time.perf_counter()
        refs = np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12), np.float32)
        onehot = np.eye(n_classes, dtype=np.float32)[yi]
        grid = [k for k in sorted(self.ks) if k < len(refs)] or [1]
        index = faiss.IndexFlatIP(refs.shape[1])
        index.add(refs)
        sims, idx = index.search(refs, grid[-1] + 1)
        # leave one out: drop each row's own hit (wherever ties put it), keep the next grid[-1]
        own = idx == np.arange(len(refs))[:, None]
        own[own.sum(axis=1) == 0, -1] = True
        keep = ~own
        sims = sims[keep].reshape(len(refs), -1)
        idx = idx[keep].reshape(len(refs), -1)
        scores = []
        for k in grid:
            w = np.maximum(sims[:, :k], 0) + 1e-6
            votes = (onehot[idx[:, :k]] * w[:, :, None]).sum(axis=1)
            scores.append(float(np.mean(votes.argmax(axis=1) == yi)))
        k = grid[int(np.argmax(scores))]
        record_search(self, "k", grid, np.asarray(scores), k, len(refs), time.perf_counter() - t0,
                      method="leave-one-out")
        self.k_ = k
        return [Step("l2norm"), Step("knn", {"refs": refs, "onehot": onehot}, {"k": int(k)})]
