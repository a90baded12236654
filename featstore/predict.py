"""Predict: a stored head applied to files, embedding (and storing) only those not embedded yet."""
from __future__ import annotations

import numpy as np

from .embed import embed_files
from .errors import FeatstoreError
from .heads.storage import load_head
from .sets import backbone_for_set
from .source import from_paths
from .store import Store


def predict(store: Store, head_name: str, paths: list[str], progress: bool = True) -> dict:
    """Label and probability per file; files that cannot be decoded come back with status 'failed'."""
    head, record = load_head(store, head_name)
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r} was fitted on embedding set {record['set_id']}, "
                             "which is no longer in this store")
    files = from_paths(paths)
    if not files:
        raise FeatstoreError("no files to predict")
    backbone, pre = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "cpu")
    summary = embed_files(store, files, backbone, s, pre, progress=progress)
    items = store.items_by_path()
    hashes = [items[f.key].hash for f in files if f.key in items and items[f.key].status == "ok"]
    vectors = store.vectors_for_hashes(s, hashes)
    ok = [f for f in files if f.key in items and items[f.key].hash in vectors]
    outputs = head.run(np.stack([vectors[items[f.key].hash] for f in ok])) if ok else []
    by_key = {f.key: p for f, p in zip(ok, outputs)}
    rows = []
    for f in files:
        item = items.get(f.key)
        if f.key not in by_key:
            rows.append({"path": f.key, "label": None, "probability": None, "status": "failed",
                         "error": (item.error if item else None) or "not embedded"})
        elif head.task_type == "regression":
            rows.append({"path": f.key, "label": None, "value": round(float(by_key[f.key][0]), 6),
                         "probability": None, "status": "ok", "error": None})
        else:
            p = by_key[f.key]
            best = int(p.argmax())
            rows.append({"path": f.key, "label": head.outputs[best], "probability": round(float(p[best]), 6),
                         "status": "ok", "error": None,
                         "probabilities": {c: round(float(v), 6) for c, v in zip(head.outputs, p)}})
    return {"head": head_name, "kind": record["kind"], "task": record["task"], "task_type": head.task_type,
            "model": s.model, "embedded_now": summary.embedded,
            "predictions": rows}
