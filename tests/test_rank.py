"""LogME (heads/logme.py) and `featstore rank`: the score agrees with the paper's direct form, orders separable
features above noise, and ranks real EfficientNet-Lite0/1/2 embedding sets and cut activations of real photos."""
import json

import numpy as np
import pytest

from conftest import SAMPLE, cli_runner
from featstore.heads.logme import logme


def _paper_logme(F, y):
    """The reference form of You et al. (2021), Algorithm 1: eigendecomposition of F^T F (D x D), each class one
    vs rest, 11 fixed-point iterations at most; evidence at the final alpha, beta."""
    F = F.astype(np.float64)
    n, d = F.shape
    s, v = np.linalg.eigh(F.T @ F)
    s = np.clip(s, 0, None)
    out = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        tmp = v.T @ (F.T @ t)
        alpha = beta = lam = 1.0
        for _ in range(11):
            gamma = (beta * s / (alpha + beta * s)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha = gamma / (m @ m)
            beta = (n - gamma) / ((t - F @ m) ** 2).sum()
            done = abs(alpha / beta - lam) / lam < 0.01
            lam = alpha / beta
            if done:
                break
        m = v @ (tmp * beta / (alpha + beta * s))
        res = ((t - F @ m) ** 2).sum()
        ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * s).sum() - beta / 2 * res
              - alpha / 2 * (m @ m) - n / 2 * np.log(2 * np.pi))
        out.append(ev / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(300, 20), (40, 100)])        # more items than features, and fewer
def test_logme_equals_the_papers_form(n, d):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, n)
    F = rng.normal(size=(n, d)) + np.eye(3)[y] @ rng.normal(size=(3, d))
    assert logme(F, y) == pytest.approx(_paper_logme(F, y), abs=1e-8)


def test_logme_orders_separable_above_weak_above_noise():
    rng = np.random.default_rng(0)
    n, d = 400, 32
    y = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, d))
    separable = centres[y] * 3 + rng.normal(size=(n, d))
    weak = centres[y] * 0.3 + rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    scores = [logme(separable, y), logme(weak, y), logme(noise, y)]
    assert scores[0] > scores[1] > scores[2]
    assert logme(separable, y.astype(str)) == scores[0]            # labels of any type


def test_logme_refuses_bad_input():
    with pytest.raises(ValueError):
        logme(np.zeros((5, 3)), [0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        logme(np.zeros((5, 3)), [0, 1])


@pytest.fixture(scope="module")
def store(home, tmp_path_factory):
    """tests/data/flowers embedded by Lite0 (with conv-head activations), Lite1 and Lite2; a logreg head on each."""
    cli = cli_runner()
    path = tmp_path_factory.mktemp("rank") / "store"
    cli("embed", SAMPLE, "--store", path, "--cut", "conv-head", "--no-progress")
    for model in ("efficientnet-lite1", "efficientnet-lite2"):
        cli("embed", SAMPLE, "--store", path, "--model", model, "--no-progress")
    for model in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        cli("fit-head", "--task", "flowers", "--model", model, "--name", model, "--store", path)
    return path


def test_rank_real_lite_sets(store):
    cli = cli_runner()
    out = json.loads(cli("rank", "--task", "flowers", "--store", store, "--json").stdout)
    rows = out["rows"]
    emb = [r for r in rows if r["kind"] == "embedding"]
    assert sorted(r["model"] for r in emb) == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert all(np.isfinite(r["logme"]) and r["accuracy"] is not None and r["n"] == 80 for r in emb)
    assert [r["logme"] for r in rows] == sorted((r["logme"] for r in rows), reverse=True)
    acts = [r for r in rows if r["kind"] == "activations"]
    assert len(acts) == 1 and acts[0]["cut"] == "conv-head" and acts[0]["dim"] == 320
    assert out["n_compared"] == 3
    assert out["kendall_tau"] is None or -1.0 <= out["kendall_tau"] <= 1.0
    text = cli("rank", "--task", "flowers", "--store", store).stdout
    assert "LogME" in text and "Kendall tau" in text and "efficientnet-lite2" in text


def test_rank_unknown_task_is_one_line(store):
    r = cli_runner()("rank", "--task", "nope", "--store", store, ok=False)
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output
