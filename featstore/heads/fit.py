"""fit-head: load a task's cached features, split them the stored way, fit, evaluate, store.

Also the leaderboard (every head kind on the same split) and few-shot learning curves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import FeatstoreError, one_of
from featstore.store.db import EmbeddingSet, Store
from . import CLASSIFIERS, REGRESSORS
from .evaluate import (SEED, TEST_FRACTION, assign_split, classification_metrics, main_metric,
                       predictions_per_second, regression_metrics, strata_for)
from .intervals import LEVEL, interval_fields, leader_verdict
from .shots import learning_curve
from .storage import check_free, load_head, save_head

NUMERIC_MIN_DISTINCT = 10   # target=auto: labels that all parse as numbers, with more distinct values, are numeric


@dataclass
class TaskData:
    eset: EmbeddingSet
    task: str
    task_type: str             # classification | regression
    hashes: list[str]
    X: np.ndarray
    y: np.ndarray              # str labels, or floats for regression
    test: np.ndarray           # bool mask: the stored held-out split

    @property
    def train(self):
        return self.X[~self.test], self.y[~self.test]

    @property
    def held_out(self):
        return self.X[self.test], self.y[self.test]


def load_task(store: Store, task: str, model: str | None = None, target: str = "auto") -> TaskData:
    """Features + labels of a task on one embedding set, with its stored split (drawn and saved on first use)."""
    if task not in store.tasks():
        raise one_of("task", task, store.tasks())
    s = store.set_for_task(task, model)
    hashes, X, labels = store.labelled(s, task)
    task_type = _task_type(labels, target, task)
    y = labels.astype(float) if task_type == "regression" else labels.astype(str)
    if task_type == "classification":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise FeatstoreError(f"task {task!r} needs at least two classes to fit a head; it has {len(classes)}")
        rare = [str(c) for c, n in zip(classes, counts) if n < 2]
        if rare:
            raise FeatstoreError(f"task {task!r}: classes with fewer than 2 examples cannot be split for "
                                 f"evaluation: {', '.join(rare)}")
    existing = store.split_of(task)
    new = assign_split(hashes, strata_for(y, task_type), existing)
    if new and store.writable:
        store.add_split(task, new)
    split = {**existing, **new}
    test = np.array([split[h] == "test" for h in hashes])
    return TaskData(s, task, task_type, hashes, X, y, test)


def _task_type(labels: np.ndarray, target: str, task: str) -> str:
    if target not in ("auto", "class", "numeric"):
        raise one_of("target", target, ["auto", "class", "numeric"])
    if target == "class":
        return "classification"
    try:
        values = labels.astype(float)
    except ValueError:
        if target == "numeric":
            raise FeatstoreError(f"task {task!r} has labels that are not numbers; it cannot be a numeric target")
        return "classification"
    if target == "numeric" or len(np.unique(values)) > NUMERIC_MIN_DISTINCT:
        return "regression"
    return "classification"


def kinds_for(task_type: str) -> dict:
    return CLASSIFIERS if task_type == "classification" else REGRESSORS


def make_head(task_type: str, kind: str, **params):
    kinds = kinds_for(task_type)
    if kind not in kinds:
        raise one_of(f"head kind for a {task_type} task", kind, list(kinds))
    return kinds[kind][0](**params)


def evaluate_head(data: TaskData, kind: str, **params) -> tuple[object, dict]:
    """Fit on the training part (hyperparameters chosen inside it), score on the held-out part."""
    est = make_head(data.task_type, kind, **params)
    X_tr, y_tr = data.train
    X_te, y_te = data.held_out
    t0 = time.perf_counter()
    est.fit(X_tr, y_tr)
    fit_seconds = time.perf_counter() - t0
    if data.task_type == "classification":
        metrics = classification_metrics(y_te, est.predict(X_te), [str(c) for c in est.classes_])
    else:
        metrics = regression_metrics(y_te, est.predict(X_te))
    search = dict(est.search_)
    if search.get("cv_accuracy"):                                 # CV accuracy at the chosen value
        search["accuracy_mean"] = search["cv_accuracy"][search["grid"].index(search["chosen"])]
    report = {"n_train": int(len(y_tr)), "n_test": int(len(y_te)), "seed": SEED, "test_fraction": TEST_FRACTION,
              "split": "stored", "task_type": data.task_type, "cv": search, "fit_seconds": fit_seconds,
              "predictions_per_second": predictions_per_second(est.predict, X_te if len(X_te) else X_tr),
              **metrics}
    return est, report


def fit_head(store: Store, task: str, kind: str = "logreg", model: str | None = None, name: str | None = None,
             target: str = "auto", data: TaskData | None = None, force: bool = False, **params) -> dict:
    """Fit one head kind for a task, evaluate it on the stored split, store it under `name` (default: the task;
    a name a stored head has is refused unless `force`)."""
    t0 = time.perf_counter()
    data = data or load_task(store, task, model, target)
    load_seconds = time.perf_counter() - t0
    if kind == "finetune":                              # trained on cut activations, not on X (finetune.py)
        from .finetune import fit_finetune

        return fit_finetune(store, task, data, name, force, load_seconds=load_seconds, **params)
    make_head(data.task_type, kind, **params)           # an unknown kind is said before a name in use
    check_free(store, [name or task], force)
    est, report = evaluate_head(data, kind, **params)
    report["load_seconds"] = load_seconds
    name = name or task
    if data.eset.precision != "fp32":
        report["precision_check"] = precision_check(store, data, kind, report, **params)
    stored_params = {"estimator": type(est).__name__, "params": _jsonable(est.get_params()), "seed": SEED}
    save_head(store, name, kind, task, data.eset.set_id, est.program_, stored_params, report)
    return {"name": name, "kind": kind, "task": task, "model": data.eset.model, "set_id": data.eset.set_id,
            "precision": data.eset.precision,
            "n_items": len(data.hashes), "classes": est.program_.outputs if data.task_type == "classification"
            else [], "task_type": data.task_type, "params": stored_params, "metrics": report}


def fit_zero_shot(store: Store, task: str, prompts=None, model: str | None = None, name: str | None = None,
                  data: TaskData | None = None, force: bool = False) -> dict:
    """A zero-shot head (zero_shot.py) from the class names of `task`, scored on its stored held-out split and
    stored like every head under `name` (default: the task; a name a stored head has is refused unless `force`)."""
    from featstore.embed.backbones import backbone_for_set, partner_backbone

    from .zero_shot import LOGIT_SCALE, class_embeddings, parse_templates, zero_shot_program

    from featstore.search.query import set_for_query

    eset = set_for_query(store, model, "text", task)          # the set `search --text` would rank
    if data is None or data.eset.set_id != eset.set_id:
        data = load_task(store, task, eset.set_id, "class")
    if data.task_type != "classification":
        raise FeatstoreError(f"--kind zero-shot needs class labels; task {task!r} has a numeric target")
    s = data.eset
    templates = parse_templates(prompts, s.modality)
    check_free(store, [name or task], force)
    t0 = time.perf_counter()
    text_backbone, tokenizer = backbone_for_set(s) if s.modality == "text" else partner_backbone(s, log=lambda _m: None)
    classes = sorted(set(data.y.tolist()))
    vectors = class_embeddings(classes, templates, lambda texts: text_backbone.run_feeds(tokenizer.encode(texts).feeds))
    program = zero_shot_program(vectors, classes)
    fit_seconds = time.perf_counter() - t0
    X_te, y_te = data.held_out

    def predict(X):
        return np.asarray(program.outputs)[program.run(X).argmax(axis=1)]

    text_model = s.model if s.modality == "text" else _partner_name(s)
    report = {"n_train": 0, "n_test": int(len(y_te)), "seed": SEED, "test_fraction": TEST_FRACTION, "split": "stored",
              "task_type": "classification", "cv": {}, "fit_seconds": fit_seconds, "load_seconds": 0.0,
              "predictions_per_second": predictions_per_second(predict, X_te if len(X_te) else data.X),
              "labels_used": 0, "prompts": templates, "text_model": text_model,
              "all_items_accuracy": float(np.mean(predict(data.X) == data.y)),
              **classification_metrics(y_te, predict(X_te), classes)}
    stored_params = {"estimator": "zero-shot", "params": {"prompts": templates, "logit_scale": LOGIT_SCALE,
                                                          "text_model": text_model}, "seed": SEED}
    name = name or task
    save_head(store, name, "zero-shot", task, s.set_id, program, stored_params, report)
    return {"name": name, "kind": "zero-shot", "task": task, "model": s.model, "set_id": s.set_id,
            "precision": s.precision, "n_items": len(data.hashes), "classes": program.outputs,
            "task_type": "classification", "params": stored_params, "metrics": report}


def _partner_name(s: EmbeddingSet) -> str:
    from featstore.embed.backbones import partner_spec

    other = partner_spec(s)
    return other.name if other is not None else "-"


def precision_check(store: Store, data: TaskData, kind: str, report: dict, **params) -> dict | None:
    """For a head on reduced-precision (int8/fp16) features: the same head kind fitted on the same model's fp32
    features of the same items, scored on the same stored split, so the cost of the precision is a measured number
    (None when the store holds no fp32 vectors for the task)."""
    s = data.eset
    twins = [t for t in store.sets() if t.model == s.model and t.precision == "fp32" and t.preprocess == s.preprocess
             and store.labelled_count(t, data.task)]
    if not twins:
        return None
    ref = load_task(store, data.task, twins[-1].set_id, "class" if data.task_type == "classification" else "numeric")
    common = np.isin(ref.hashes, data.hashes)
    if not common.all():       # compare on the items both sets hold
        ref = TaskData(ref.eset, ref.task, ref.task_type, [h for h, c in zip(ref.hashes, common) if c],
                       ref.X[common], ref.y[common], ref.test[common])
    _, ref_report = evaluate_head(ref, kind, **params)
    metric, value = main_metric(report)
    _, ref_value = main_metric(ref_report)
    return {"metric": metric, "precision": s.precision, "value": value, "fp32_value": ref_value,
            "fp32_set_id": twins[-1].set_id, "same_items": bool(common.all()),
            "delta_points": None if value is None or ref_value is None else 100 * (value - ref_value)}


def leaderboard(store: Store, task: str, model: str | None = None, name: str | None = None,
                target: str = "auto", log=lambda msg: None, data: TaskData | None = None, force: bool = False) -> dict:
    """Every head kind for the task's type on the same stored split, each stored as NAME-KIND; best first. Names
    stored heads have are refused, all before any fitting, unless `force`."""
    data = data or load_task(store, task, model, target)
    kinds = list(kinds_for(data.task_type)) + _cut_kinds(store, data, log)
    check_free(store, [f"{name or task}-{kind}" for kind in kinds], force)
    rows = []
    for kind in kinds:
        log(f"fitting {kind} ...")
        out = fit_head(store, task, kind, name=f"{name or task}-{kind}", data=data, force=True)
        metric, value = main_metric(out["metrics"])
        rows.append({"head": out["name"], "kind": kind, "metric": metric, "value": value,
                     **_interval(store, data, out["name"], metric, value),
                     "fit_seconds": out["metrics"]["fit_seconds"],
                     "predictions_per_second": out["metrics"]["predictions_per_second"],
                     "chosen": {out["metrics"]["cv"].get("param"): out["metrics"]["cv"].get("chosen")},
                     "confusion": out["metrics"].get("confusion")})
    rows.sort(key=lambda r: -(r["value"] if r["value"] is not None else -np.inf))
    return {"task": task, "model": data.eset.model, "set_id": data.eset.set_id, "task_type": data.task_type,
            "n_train": int((~data.test).sum()), "n_test": int(data.test.sum()), "rows": rows,
            "ci_level": LEVEL, "verdict": leader_verdict(rows)}


def _interval(store: Store, data: TaskData, head: str, metric: str, value) -> dict:
    """A leaderboard row's 95% interval (intervals.py): Wilson for accuracy, bootstrap of the stored head's
    held-out predictions for R^2."""
    if metric == "accuracy" or value is None:
        return interval_fields(metric, value, int(data.test.sum()))
    X_te, y_te = data.held_out
    return interval_fields(metric, value, len(y_te), y_te, load_head(store, head)[0].run(X_te)[:, 0])


def _cut_kinds(store: Store, data: TaskData, log) -> list[str]:
    """["finetune"] when the task's set has cut activations (finetune.py), else [] and why, logged."""
    if data.task_type != "classification":
        return []
    from .finetune import skipped_reason

    why = skipped_reason(store, data.eset)
    if why:
        log(f"finetune skipped: {why}")
    return [] if why else ["finetune"]


def few_shot(store: Store, task: str, shots: list[int], seeds: int = 5, kind: str = "logreg",
             model: str | None = None) -> dict:
    """Learning curve: N labelled training examples per class (several seeded draws), scored on the stored
    held-out split. The last row uses the whole training part."""
    if kind == "finetune":
        from .finetune import few_shot_finetune

        return few_shot_finetune(store, load_task(store, task, model, "class"), shots, seeds)
    data = load_task(store, task, model, "class")
    X_tr, y_tr = data.train
    X_te, y_te = data.held_out
    classes = sorted(set(y_tr.tolist()))

    def score(idx, _seed):
        est = make_head("classification", kind).fit(X_tr[idx], y_tr[idx])
        return float(np.mean(est.predict(X_te) == y_te))

    rows = learning_curve(y_tr, np.arange(len(y_tr)), shots, seeds, score)
    return {"task": task, "kind": kind, "model": data.eset.model, "n_test": int(len(y_te)), "seeds": seeds,
            "classes": classes, "chance": 1 / len(classes), "rows": rows}


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, (tuple, list, np.ndarray)):
            v = [float(x) for x in v]
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v if isinstance(v, (int, float, str, bool, list, type(None))) else str(v)
    return out


def check_options(kind: str, C, name, target: str, shots, seeds, plot, prompts=None, force: bool = False,
                  plot_normalize: bool = False) -> None:
    """Every option combination of a fit checked before any work (a leaderboard takes about a minute)."""
    if prompts is not None and kind != "zero-shot":
        raise FeatstoreError("--prompts applies to --kind zero-shot only")
    if kind == "zero-shot" and (shots or target == "numeric"):
        raise FeatstoreError("--kind zero-shot builds one classifier from class names; no --shots or "
                             "--target numeric")
    if C is not None and kind != "logreg":
        raise FeatstoreError("--C applies to --kind logreg only")
    if shots:
        for option, given in (("--kind all", kind == "all"), ("--C", C is not None), ("--name", name is not None),
                              ("--target numeric", target == "numeric"), ("--force", force)):
            if given:
                raise FeatstoreError(f"{option} does not combine with --shots (a learning curve of one head kind "
                                     "on class labels; nothing is stored)")
    elif seeds is not None:
        raise FeatstoreError("--seeds applies to --shots only")
    if plot_normalize and (not plot or shots):
        raise FeatstoreError("--plot-normalize applies to the confusion matrix that --plot draws (not to --shots)")
    if plot:
        from .plot_io import check_plot_path, matplotlib

        check_plot_path(plot)
        matplotlib()                # not installed: said now, before a fit


def plot_result(out: dict, plot: str, curve: bool, normalize: bool = False, predictions: dict | None = None):
    """The figure of a fit (plot.py): the few-shot curve, the head's (leaderboard: the best head's) confusion
    matrix, or predicted against actual for a numeric target."""
    from .plot import plot_fit

    return plot_fit(out, plot, curve=curve, normalize=normalize, predictions=predictions)
