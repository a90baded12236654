"""A stored head as a fitted scikit-learn estimator (`fs.head(name)`): its own featstore head class with the
stored parameters and Program, so predict/predict_proba give what `fs.predict` gives and clone() + fit() refit."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.heads.base import ProgramClassifier, ProgramRegressor
from featstore.heads.program import Program


class StoredClassifier(ProgramClassifier):
    """A stored classification head that has no trainable class of its own (zero-shot, heads of featstore 0.1)."""

    def _fit(self, X, yi, n_classes):
        raise FeatstoreError("this stored head cannot be refitted on X, y (zero-shot heads come from class-name "
                             "prompts): fit a new one with fs.fit_head")


class StoredRegressor(ProgramRegressor):
    """A stored regression head without a trainable class of its own."""

    def _fit(self, X, y):
        raise FeatstoreError("this stored head cannot be refitted on X, y: fit a new one with fs.fit_head")


def as_estimator(program: Program, record: dict):
    """The fitted estimator for a stored head's Program and record (as heads.storage.load_head gives them)."""
    regression = program.task_type == "regression"
    est = _own_class(record, regression) or (StoredRegressor() if regression else StoredClassifier())
    est.program_ = program
    est.n_features_in_ = input_dim(program)
    est.search_ = dict(record.get("metrics", {}).get("cv") or {})
    if not regression:
        est.classes_ = np.asarray(program.outputs)
    return est


def _own_class(record: dict, regression: bool):
    """The head's own class built with its stored parameters, or None where the record names none usable."""
    import featstore.heads as heads

    stored = record.get("params") or {}
    cls = getattr(heads, str(stored.get("estimator")), None)
    base = ProgramRegressor if regression else ProgramClassifier
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return None
    names = set(cls._get_param_names())
    try:
        return cls(**{k: v for k, v in (stored.get("params") or {}).items() if k in names})
    except (TypeError, ValueError):
        return None


def input_dim(program: Program) -> int:
    """How many features the Program reads: the width of its first step that holds arrays."""
    for step in program.steps:
        if step.op == "standardise":
            return int(step.arrays["mean"].shape[-1])
        if step.op == "dense":
            return int(step.arrays["weight"].shape[0])
        if step.op == "knn":
            return int(step.arrays["refs"].shape[1])
    raise FeatstoreError("stored head has no step with weights; its input width is unknown")
