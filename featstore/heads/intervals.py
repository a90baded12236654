"""How sure a held-out score is: a 95% interval per head, and whether a leaderboard's leader is clear of the
runner-up.

Accuracy: the Wilson score interval of k right out of n held-out items (scipy's binomtest), which stays inside
[0, 1] and is honest for small n. R^2 (numeric targets): a percentile bootstrap over the held-out items (1000
resamples, fixed seed). The leader is "within noise" of the runner-up when the runner-up's score lies inside the
leader's interval: the held-out set is too small to tell the two apart.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0


def accuracy_interval(accuracy: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of an accuracy measured on n items."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(round(accuracy * n)), n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def r2_interval(y_true, y_pred, level: float = LEVEL, resamples: int = RESAMPLES,
                seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of R^2 over the held-out items (resampled with their predictions)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(resamples, len(y_true)))
    t, p = y_true[idx], y_pred[idx]
    ss_res = ((t - p) ** 2).sum(axis=1)
    ss_tot = ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    r2 = 1 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)
    r2 = r2[np.isfinite(r2)]
    if not len(r2):
        return float("nan"), float("nan")
    low, high = np.quantile(r2, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def interval_fields(metric: str, value: float | None, n: int, y_true=None, y_pred=None) -> dict:
    """The interval columns of one leaderboard row: ci_low, ci_high, ci_method."""
    if value is None:
        return {"ci_low": None, "ci_high": None, "ci_method": None}
    if metric == "accuracy":
        low, high = accuracy_interval(value, n)
        return {"ci_low": low, "ci_high": high, "ci_method": "wilson"}
    low, high = r2_interval(y_true, y_pred)
    return {"ci_low": low, "ci_high": high, "ci_method": "bootstrap"}


def leader_verdict(rows: list[dict], level: float = LEVEL) -> dict | None:
    """Whether the best row is clear of the second (rows sorted best first, each with value and ci_low)."""
    scored = [r for r in rows if r.get("value") is not None]
    if len(scored) < 2:
        return None
    first, second = scored[0], scored[1]
    within = second["value"] >= first["ci_low"]
    accuracy = first["metric"] == "accuracy"
    gap = (first["value"] - second["value"]) * (100 if accuracy else 1)
    gap_text = f"{gap:.1f} points" if accuracy else f"{gap:.3f} R^2"
    verdict = (f"within the {level:.0%} interval: not a clear winner" if within
               else f"outside the {level:.0%} interval: a clear winner on this held-out set")
    return {"leader": first["kind"], "runner_up": second["kind"], "gap": gap,
            "gap_unit": "points" if accuracy else "r2", "within_noise": bool(within),
            "statement": (f"{first['kind']} and {second['kind']} tie" if gap == 0 else
                          f"{first['kind']} leads {second['kind']} by {gap_text}") + f", {verdict}"}
