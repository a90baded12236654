"""Every head class featstore.heads exports passes scikit-learn's own estimator checks (its common test suite),
and bad input to a head fails with scikit-learn's clear errors instead of AssertionError / IndexError / garbage.

The checks use parameters that keep them affordable (a two-value C grid, a few torch epochs at a higher learning
rate); the estimator code under test is the one fit-head runs. No exemptions are needed: sparse input is refused
with scikit-learn's own message, which is what the sparse checks ask of a dense-only estimator."""
import inspect

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import featstore.heads as heads
from featstore.heads import (KNNHead, LinearSVMHead, LogisticRegressionHead, RidgeHead, RidgeRegressionHead,
                             TorchHead, TorchMLPRegressor)

FAST_TORCH = dict(lr=0.05, max_epochs=20, patience=5)
CHECKED = [
    LogisticRegressionHead(Cs=(0.1, 1.0), cv=3),
    KNNHead(),
    LinearSVMHead(),
    RidgeHead(),
    RidgeRegressionHead(),
    TorchHead(**FAST_TORCH),
    TorchHead(hidden=8, **FAST_TORCH),
    TorchMLPRegressor(hidden=8, dropout=0.0, **FAST_TORCH),
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny check datasets: torch's thread pool costs far more than it saves (20x on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_every_exported_head_class_is_checked():
    exported = {obj for name in heads.__all__ if inspect.isclass(obj := getattr(heads, name))}
    kinds = {getattr(f, "func", f) for table in (heads.CLASSIFIERS, heads.REGRESSORS) for f, _ in table.values()}
    assert kinds <= exported
    assert {type(e) for e in CHECKED} == exported


@pytest.mark.parametrize("est", [RidgeHead(), RidgeRegressionHead()], ids=["classifier", "regressor"])
def test_bad_input_is_a_clear_value_error(est):
    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 6), np.repeat([0, 1], 20)
    with pytest.raises(NotFittedError):
        est.predict(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    est.fit(X, y)
    assert est.n_features_in_ == 6
    with pytest.raises(ValueError, match="X has 5 features, but .* is expecting 6 features"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="Expected 2D array"):
        est.predict(X[0])


def test_a_continuous_target_is_not_forty_classes():
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match="Unknown label type"):
        LogisticRegressionHead().fit(rng.randn(40, 6), rng.randn(40))


def test_a_row_scores_the_same_in_any_batch_order():
    """A float32 GEMM rounds a row differently depending on where it falls in the batch; predictions must not
    (scikit-learn's sample-order check failed on one CPU by one float32 ulp)."""
    from featstore.heads.program import Program, dense, standardise

    rng = np.random.default_rng(0)
    for n, d, c in [(7, 1280, 1), (33, 64, 1), (257, 1280, 1), (33, 64, 5), (257, 1280, 5)]:
        X = rng.normal(size=(n, d)).astype(np.float32)
        prog = Program([standardise(np.zeros(d), np.ones(d)), dense(rng.normal(size=(d, c)), np.zeros(c))],
                       [f"c{i}" for i in range(c)], "regression")
        perm = rng.permutation(n)
        assert np.array_equal(prog.run(X)[perm], prog.run(X[perm])), (n, d, c)
