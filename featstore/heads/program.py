"""A fitted head as a short list of array operations.

This is the one definition of what a stored head computes: `Program.run` evaluates it with numpy (predict,
search-time use, the estimators' own predict_proba) and `featstore.heads.onnx_ops` emits the very same steps as
ONNX nodes for the fused one-file export. Only plain arrays and names are stored: no pickle, no code.

Steps (x is a float batch, one row per item):
  standardise  x = (x - mean) / scale
  l2norm       x = x / |x|
  dense        x = x @ weight + bias          weight: (d_in, d_out)
  relu         x = max(x, 0)
  softmax      x = softmax(x) over the last axis
  onnx         a fine-tuned top: layers above a cut point as an ONNX graph (finetune_graph.py), rows of flattened
               activations in, pooled features out (ONNX Runtime)
  knn          similarity-weighted vote of the k most similar reference rows, found with FAISS (refs are unit
               vectors, onehot is (n_refs, n_classes)); x must be unit-normalised first
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import FeatstoreError

STEP_ARRAYS = {"standardise": ("mean", "scale"), "l2norm": (), "dense": ("weight", "bias"), "relu": (),
               "softmax": (), "knn": ("refs", "onehot"), "onnx": ("graph", "weights")}
KNN_EPS = 1e-6


@dataclass
class Step:
    op: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass
class Program:
    steps: list[Step]
    outputs: list[str]            # class names (classification) or the one target name (regression)
    task_type: str = "classification"

    def run(self, X) -> np.ndarray:
        x = np.asarray(X, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        for step in self.steps:
            x = _RUN[step.op](x, step)
        return x

    # ---- storage form: JSON layout + named arrays ------------------------------------------------------------
    def layout(self) -> str:
        return json.dumps({"task_type": self.task_type, "outputs": self.outputs,
                           "steps": [{"op": s.op, "attrs": s.attrs} for s in self.steps]})

    def named_arrays(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.arrays.items()}

    @classmethod
    def from_stored(cls, layout: str, arrays: dict[str, np.ndarray]) -> "Program":
        spec = json.loads(layout)
        steps = []
        for i, s in enumerate(spec["steps"]):
            if s["op"] not in STEP_ARRAYS:
                raise FeatstoreError(f"stored head uses an operation this featstore does not know: {s['op']!r}")
            steps.append(Step(s["op"], {k: arrays[f"{i}.{k}"] for k in STEP_ARRAYS[s["op"]]}, s.get("attrs", {})))
        return cls(steps, spec["outputs"], spec.get("task_type", "classification"))


def linear_program(mean, scale, weight, bias, outputs, softmax: bool = True) -> Program:
    """standardise -> dense (-> softmax): what every linear head compiles to."""
    steps = [standardise(mean, scale), dense(weight, bias)] + ([Step("softmax")] if softmax else [])
    return Program(steps, list(outputs), "classification" if softmax else "regression")


def standardise(mean, scale) -> Step:
    return Step("standardise", {"mean": _f32(mean), "scale": _f32(scale)})


def dense(weight, bias) -> Step:
    return Step("dense", {"weight": _f32(weight), "bias": _f32(bias)})


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _standardise(x, s):
    return (x - s.arrays["mean"]) / s.arrays["scale"]


def _l2norm(x, s):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _dense(x, s):
    """float64 products, float32 result: a float32 GEMM's rounding depends on where a row falls in the batch
    (BLAS kernels block rows), so the same row could score differently in another batch or order."""
    return (np.asarray(x, np.float64) @ s.arrays["weight"].astype(np.float64) + s.arrays["bias"]).astype(np.float32)


def _relu(x, s):
    return np.maximum(x, 0)


def _softmax(x, s):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _knn(x, s):
    from featstore import runtimes
    faiss = runtimes.faiss()

    refs, onehot, k = s.arrays["refs"], s.arrays["onehot"], int(s.attrs["k"])
    index = faiss.IndexFlatIP(refs.shape[1])
    index.add(np.ascontiguousarray(refs, np.float32))
    sims, idx = index.search(np.ascontiguousarray(x, np.float32), k)
    w = np.maximum(sims, 0) + KNN_EPS
    votes = (onehot[idx] * w[:, :, None]).sum(axis=1)
    return votes / w.sum(axis=1, keepdims=True)


def _onnx(x, s):
    from .finetune_graph import run_step

    return run_step(x, s)


_RUN = {"standardise": _standardise, "l2norm": _l2norm, "dense": _dense, "relu": _relu, "softmax": _softmax,
        "knn": _knn, "onnx": _onnx}
