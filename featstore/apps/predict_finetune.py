"""Predict with a fine-tuned head: every input runs through the head's fused ONNX model (apps/fuse.py: frozen
layers below the cut, the tuned top, the linear layer), exported and checked as `featstore export --head` makes
it, so predict and the exported file give the same probabilities. ONNX Runtime only; no torch."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

BATCH = 32


def fused_session(store, head_name: str):
    """An ONNX Runtime session on the head's fused model (made in a temporary folder, checked, then read)."""
    from featstore import runtimes
    from featstore.apps.fuse import export_fused

    ort = runtimes.onnxruntime()
    with tempfile.TemporaryDirectory(prefix="featstore-fused-") as tmp:
        path = Path(tmp) / "head.onnx"
        export_fused(store, head_name, path)
        return ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])


def fused_outputs(session, s, pre, inputs: list) -> tuple[dict, dict]:
    """(key -> probabilities, key -> why it failed) for image files or text records, BATCH at a time."""
    from featstore.embed.decode import pixels_into, read_hashed
    from featstore.models.preprocess import normalise

    outputs, errors, pending = {}, {}, []
    name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name

    def flush():
        if not pending:
            return
        keys = [k for k, _ in pending]
        if s.modality == "text":
            feeds = pre.encode([t for _, t in pending]).feeds
            feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
        else:
            feeds = {name: normalise(np.stack([p for _, p in pending]), pre)}
        outputs.update(zip(keys, session.run([out_name], feeds)[0]))
        pending.clear()

    for g in inputs:
        if getattr(g, "error", None):
            errors[g.key] = g.error
            continue
        if s.modality == "text":
            pending.append((g.key, g.text))
        else:
            prep = read_hashed(g.path)
            if prep.error is None:
                pixels_into(prep, prep.data, pre)
            if prep.error:
                errors[g.key] = prep.error
                continue
            pending.append((g.key, prep.pixels))
        if len(pending) >= BATCH:
            flush()
    flush()
    return outputs, errors
