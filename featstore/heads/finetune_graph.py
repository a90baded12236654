"""A fine-tuned top as a Program step: the tuned layers above a cut exported to ONNX and stored as plain arrays.

The step `onnx` holds two arrays: `graph`, the ONNX model's bytes without its large float weights (one value per
byte), and `weights`, those weights' float32 values end to end, in initializer order. Nothing is pickled; the
graph is data that ONNX Runtime runs, so predicting with a fine-tuned head needs no torch.

The step's input is a batch of flattened activations, one row per item (attrs `input_shape`); for text the row
ends with the item's attention mask (attrs `mask`: true, T = input_shape[0] values of 0/1).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

EXTERNAL_MIN = 64         # float initializers with at least this many values go into `weights`
MARK = "featstore:weights"
RUN_BATCH = 64


def export_top(top, example: np.ndarray, mask: np.ndarray | None) -> bytes:
    """torch top module (activation[, mask] -> pooled features) -> ONNX bytes; dynamic batch (and token) axis."""
    import io

    import torch

    from featstore.models.export import OPSET

    top.eval()
    names = ["activation"] + (["mask"] if mask is not None else [])
    axes = {"activation": {0: "batch"}, "features": {0: "batch"}}
    if mask is not None:
        axes |= {"activation": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}}
    args = (torch.from_numpy(np.asarray(example[:2], np.float32)),)
    if mask is not None:
        args += (torch.from_numpy(np.asarray(mask[:2], np.int64)),)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(top, args, buf, input_names=names, output_names=["features"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def graph_step(model_bytes: bytes, input_shape, has_mask: bool) -> tuple[dict, dict]:
    """The arrays and attrs of the `onnx` Program step of an exported top."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model_bytes)
    weights = []
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and int(np.prod(init.dims)) >= EXTERNAL_MIN:
            weights.append(numpy_helper.to_array(init).astype(np.float32).ravel())
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.doc_string = MARK
    graph = np.frombuffer(m.SerializeToString(), np.uint8).astype(np.float32)
    w = np.concatenate(weights) if weights else np.zeros(0, np.float32)
    return {"graph": graph, "weights": w}, {"input_shape": [int(s) for s in input_shape], "mask": bool(has_mask)}


def step_model(step):
    """The step's ONNX ModelProto, weights put back."""
    import onnx

    m = onnx.load_from_string(np.asarray(step.arrays["graph"]).astype(np.uint8).tobytes())
    w = np.asarray(step.arrays["weights"], np.float32)
    offset = 0
    for init in m.graph.initializer:
        if init.doc_string == MARK:
            n = int(np.prod(init.dims))
            init.raw_data = w[offset:offset + n].astype("<f4").tobytes()
            init.doc_string = ""
            offset += n
    if offset != len(w):
        from featstore.errors import FeatstoreError

        raise FeatstoreError("stored fine-tuned head is inconsistent: its weights do not fit its graph")
    return m


def flatten(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Activations (n, *shape) [+ mask (n, T)] -> the step's input rows (n, prod(shape) [+ T]), float32."""
    rows = np.asarray(x, np.float32).reshape(len(x), -1)
    return rows if mask is None else np.concatenate([rows, np.asarray(mask, np.float32)], axis=1)


def run_step(x: np.ndarray, step) -> np.ndarray:
    """The step's graph on rows x (ONNX Runtime; the session is kept on the step object)."""
    session = getattr(step, "_session", None)
    if session is None:
        from featstore import runtimes

        ort = runtimes.onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(step_model(step).SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        step._session = session
    shape = tuple(step.attrs["input_shape"])
    width = int(np.prod(shape)) + (shape[0] if step.attrs.get("mask") else 0)
    if x.shape[1] != width:
        from featstore.errors import FeatstoreError

        raise FeatstoreError(f"a fine-tuned head reads activations of shape {shape} (rows of {width} values), "
                             f"not rows of {x.shape[1]}: it cannot run on pooled vectors")
    out = []
    for start in range(0, len(x), RUN_BATCH):
        rows = x[start:start + RUN_BATCH]
        feeds = {"activation": rows[:, :int(np.prod(shape))].reshape((len(rows),) + shape).astype(np.float32)}
        if step.attrs.get("mask"):
            feeds["mask"] = np.rint(rows[:, int(np.prod(shape)):]).astype(np.int64)
        out.append(session.run(["features"], feeds)[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
