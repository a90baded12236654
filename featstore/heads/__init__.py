"""Heads: estimators trained on cached features (never the backbone), evaluated on a stored split, stored as
plain arrays. Every head follows the scikit-learn estimator contract and compiles to a Program (program.py)."""
from __future__ import annotations

from functools import partial

from .knn import KNNHead
from .linear import LinearSVMHead, RidgeHead, RidgeRegressionHead
from .logreg import LogisticRegressionHead
from .torch_heads import TorchHead, TorchMLPRegressor

# kind -> (factory, one-line description); the first is the default
CLASSIFIERS = {
    "logreg": (LogisticRegressionHead, "standardise + logistic regression, C by 5-fold CV (log-loss)"),
    "svm": (LinearSVMHead, "standardise + linear SVM, C by 3-fold CV, temperature-calibrated"),
    "ridge": (RidgeHead, "standardise + ridge classifier, alpha by leave-one-out, temperature-calibrated"),
    "knn": (KNNHead, "cosine k-NN (FAISS), k by leave-one-out"),
    "linear": (partial(TorchHead, hidden=0), "torch linear layer, AdamW + early stopping"),
    "mlp": (partial(TorchHead, hidden=512, dropout=0.2), "torch MLP (512 hidden), AdamW + early stopping"),
}
REGRESSORS = {
    "ridge": (RidgeRegressionHead, "standardise + ridge regression, alpha by leave-one-out"),
    "mlp": (TorchMLPRegressor, "torch MLP regressor (256 hidden), early stopping"),
}
TORCH_KINDS = {"linear", "mlp"}
# kinds trained on cut activations (`embed --cut`), not on pooled vectors: fit.fit_head hands them to finetune.py
CUT_KINDS = {"finetune": "the layers above a cut + a linear layer, fine-tuned on stored activations (torch at fit "
                         "time only)"}

__all__ = ["CLASSIFIERS", "CUT_KINDS", "REGRESSORS", "TORCH_KINDS", "KNNHead", "LinearSVMHead", "LogisticRegressionHead",
           "RidgeHead", "RidgeRegressionHead", "TorchHead", "TorchMLPRegressor"]
