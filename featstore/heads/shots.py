"""A few-shot learning curve, whatever the head: N training examples per class in seeded draws, each scored on
the held-out part, then the whole training part once."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError


def learning_curve(y: np.ndarray, train_idx: np.ndarray, shots: list[int], seeds: int, score,
                   log=lambda _m: None) -> list[dict]:
    """Rows of the curve: `score(idx, seed)` (held-out accuracy of a head fitted on the rows `idx` of the
    training part `train_idx`, labels `y`) for each N in `shots` and each draw, and for all of `train_idx`."""
    classes = sorted(set(y[train_idx].tolist()))
    by_class = {c: train_idx[y[train_idx] == c] for c in classes}
    smallest = min(len(ix) for ix in by_class.values())
    rows = []
    for n in sorted(set(shots)):
        if n < 1:
            raise FeatstoreError(f"--shots must be positive, got {n}")
        accs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            pick = np.concatenate([rng.choice(ix, size=min(n, len(ix)), replace=False) for ix in by_class.values()])
            log(f"{n} shots, draw {seed + 1}/{seeds} ...")
            accs.append(score(pick, seed))
        rows.append(curve_row(n, accs, smallest < n))
    rows.append(curve_row("all", [score(train_idx, 0)], False))
    return rows


def curve_row(shots, accs: list[float], capped: bool) -> dict:
    a = np.asarray(accs)
    return {"shots": shots, "runs": len(a), "accuracy_mean": float(a.mean()), "accuracy_std": float(a.std()),
            "accuracy_min": float(a.min()), "accuracy_max": float(a.max()), "capped_by_class_size": capped}
