"""The `finetune` head: the pretrained layers above a cut point plus a linear layer, trained on the activations
cached at that cut (`featstore embed SOURCE --cut NAME [--views N]`), evaluated on the task's stored split like
every head.

Training (finetune_train.py, torch, fit time only) uses every stored view of each training item; validation
(early stopping) and evaluation use view 0, the plain preprocessing. The tuned layers are exported to ONNX and
stored as a Program step (finetune_graph.py) followed by the linear layer and a softmax, so the head is plain
arrays in the store and predicting with it runs ONNX Runtime only. The export is checked against torch at fit
time (<= PARITY_TOLERANCE on held-out activations).
"""
from __future__ import annotations

import time

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store.db import Store
from .evaluate import SEED, TEST_FRACTION, classification_metrics
from .finetune_graph import export_top, flatten, graph_step
from .finetune_train import TuneSettings, train
from .program import Program, Step, dense
from .shots import learning_curve
from .storage import check_free, save_head

KIND = "finetune"
DESCRIPTION = "the layers above a cut + a linear layer, fine-tuned on stored activations (AdamW, early stopping)"
PARITY_TOLERANCE = 1e-4


def activation_set_for_task(store: Store, eset, cut: str | None = None):
    """The newest activation set of the task's embedding set (at `cut` if given), or one line naming the
    `embed --cut` to run."""
    from featstore.store.activations import find_activation_set

    if cut is not None:
        from featstore.models.cuts import check_cut

        check_cut(eset.model, cut)             # an unknown cut: one line listing the model's cut points
    return find_activation_set(store, eset.set_id, cut)


def skipped_reason(store: Store, eset) -> str | None:
    """None when the set has cut activations (a finetune head can be fitted), else why not, in one line."""
    try:
        activation_set_for_task(store, eset)
    except FeatstoreError as exc:
        return str(exc)
    return None


def fit_finetune(store: Store, task: str, data, name: str | None = None, force: bool = False, cut: str | None = None,
                 log=lambda _m: None, load_seconds: float = 0.0, **params) -> dict:
    """Fine-tune on the task's training part (`data`: fit.load_task's), score on its stored held-out part,
    store under `name`."""
    t0 = time.perf_counter() - load_seconds
    if data.task_type != "classification":
        raise FeatstoreError(f"--kind {KIND} needs class labels; task {task!r} has a numeric target")
    aset = activation_set_for_task(store, data.eset, cut)
    name = name or task
    check_free(store, [name], force)
    acts = read_task_activations(store, aset, data.hashes)
    load_seconds = time.perf_counter() - t0
    classes = sorted(set(data.y.tolist()))
    train_idx = np.flatnonzero(~data.test)
    program, tune_report, _ = tune(aset, acts, data.y, train_idx, classes, TuneSettings(**params), log)
    test_idx = np.flatnonzero(data.test)
    t1 = time.perf_counter()
    proba = program.run(rows(acts, test_idx)) if len(test_idx) else np.zeros((0, len(classes)))
    per_second = len(test_idx) / max(time.perf_counter() - t1, 1e-9)
    pred = np.asarray(classes)[proba.argmax(axis=1)] if len(test_idx) else np.asarray([], str)
    report = {"n_train": int(len(train_idx)), "n_test": int(len(test_idx)), "seed": SEED,
              "test_fraction": TEST_FRACTION, "split": "stored", "task_type": "classification",
              "cv": {k: v for k, v in tune_report.items() if k != "history"},
              "history": tune_report["history"], "fit_seconds": tune_report["seconds"],
              "load_seconds": load_seconds, "predictions_per_second": per_second,
              "cut": aset.cut, "act_id": aset.act_id, "views": aset.views, "onnx_parity": tune_report["onnx_parity"],
              **classification_metrics(data.y[test_idx], pred, classes)}
    stored = {"estimator": "finetune", "params": dict(tune_report["settings"], cut=aset.cut), "seed": SEED,
              "act_id": aset.act_id, "cut": aset.cut, "model": aset.model}
    save_head(store, name, KIND, task, data.eset.set_id, program, stored, report)
    return {"name": name, "kind": KIND, "task": task, "model": data.eset.model, "set_id": data.eset.set_id,
            "precision": data.eset.precision, "n_items": len(data.hashes), "classes": classes,
            "task_type": "classification", "params": stored, "metrics": report}


def read_task_activations(store: Store, aset, hashes: list[str]) -> dict:
    from featstore.store.activations import read_activations

    return read_activations(store, aset, hashes, views=True)


def rows(acts: dict, idx: np.ndarray) -> np.ndarray:
    """View-0 activations of items idx as the Program's input rows."""
    return flatten(acts["x"][idx, 0], None if acts["mask"] is None else acts["mask"][idx])


def tune(aset, acts: dict, y: np.ndarray, train_idx: np.ndarray, classes: list[str], settings: TuneSettings,
         log=lambda _m: None) -> tuple[Program, dict, object]:
    """Train on items train_idx (all views), export, check the export against torch: (the head's Program, the
    training report, the tuned torch top)."""
    import torch

    from featstore.models.cuts import top_module

    yi = np.searchsorted(classes, y[train_idx])
    top = top_module(aset.model, aset.cut)
    x = acts["x"][train_idx]
    mask = None if acts["mask"] is None else acts["mask"][train_idx]
    tuned = train(top, x, mask, yi, len(classes), settings, log=log)
    x0 = x[:8, 0]
    m0 = None if mask is None else mask[:8]
    step = Step("onnx", *graph_step(export_top(tuned.top, x0, m0), aset.shape, mask is not None))
    with torch.no_grad():
        xt = torch.from_numpy(np.asarray(x0, np.float32))
        expected = (tuned.top(xt) if m0 is None else tuned.top(xt, torch.from_numpy(m0.astype(np.int64)))).numpy()
    program = Program([step, dense(tuned.weight, tuned.bias), Step("softmax")], list(classes), "classification")
    got = _run_top(program, flatten(x0, m0))
    diff = float(np.abs(got - expected).max())
    if not np.isfinite(diff) or diff > PARITY_TOLERANCE:
        raise FeatstoreError(f"fine-tuned top refused: its ONNX export differs from torch by {diff:.2e} "
                             f"(> {PARITY_TOLERANCE:g})")
    report = dict(tuned.report, onnx_parity=diff)
    return program, report, tuned.top


def _run_top(program: Program, x: np.ndarray) -> np.ndarray:
    return Program(program.steps[:1], ["features"], "regression").run(x)


def few_shot_finetune(store: Store, data, shots: list[int], seeds: int = 5, log=lambda _m: None) -> dict:
    """The learning curve of the finetune head on `data` (fit.load_task's): N training examples per class
    (seeded draws), scored on the stored held-out split; the last row uses the whole training part. Nothing is
    stored."""
    task = data.task
    aset = activation_set_for_task(store, data.eset)
    acts = read_task_activations(store, aset, data.hashes)
    train_all, test_idx = np.flatnonzero(~data.test), np.flatnonzero(data.test)
    classes = sorted(set(data.y.tolist()))
    y_te = data.y[test_idx]

    def score(idx, seed):
        program, _, _ = tune(aset, acts, data.y, idx, classes, TuneSettings(seed=seed), log)
        return float(np.mean(np.asarray(classes)[program.run(rows(acts, test_idx)).argmax(axis=1)] == y_te))

    out_rows = learning_curve(data.y, train_all, shots, seeds, lambda idx, seed: score(np.sort(idx), seed), log)
    return {"task": task, "kind": KIND, "model": data.eset.model, "n_test": int(len(test_idx)), "seeds": seeds,
            "classes": classes, "chance": 1 / len(classes), "rows": out_rows, "cut": aset.cut}


def run_stored(store: Store, program: Program, record: dict, hashes: list[str]) -> np.ndarray:
    """A stored finetune head's outputs for contents of the store: their stored view-0 activations through the
    tuned top and the linear layer (ONNX Runtime; activations are fp16, so within ~1e-3 of predict on the files)."""
    from featstore.store.activations import activation_sets, read_activations

    act_id = record["params"].get("act_id")
    aset = next((a for a in activation_sets(store) if a.act_id == act_id), None)
    if aset is None:
        raise FeatstoreError(f"head {record['name']!r} was tuned on activations ({act_id}) no longer in this store")
    acts = read_activations(store, aset, hashes, views=False)
    return program.run(rows(acts, np.arange(len(hashes))))
