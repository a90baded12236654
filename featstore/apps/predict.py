"""Predict: a stored head applied to files, embedding (and storing) only those not embedded yet."""
from __future__ import annotations

import os

import numpy as np

from featstore.embed.local import embed_files
from featstore.embed.text import embed_texts
from featstore.errors import FeatstoreError
from featstore.heads.storage import load_head
from featstore.embed.backbones import backbone_for_set
from featstore.embed.source import from_paths
from featstore.paths import display_path
from featstore.store.db import Store
from featstore.embed.text_source import read_text_source


def predict(store: Store, head_name: str, paths: list[str], progress: bool = True) -> dict:
    """Label and probability per file (or text); inputs that cannot be used come back with status 'failed'."""
    head, record = load_head(store, head_name)
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r} was fitted on embedding set {record['set_id']}, "
                             "which is no longer in this store")
    backbone, pre = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "cpu")
    if s.modality == "text":
        records = _text_records(paths)
        keys = [r.key for r in records]
        summary = embed_texts(store, records, backbone, s, pre, progress=progress) if records else None
    else:
        files = from_paths(paths)
        keys = [f.key for f in files]
        summary = embed_files(store, files, backbone, s, pre, progress=progress) if files else None
    if not keys:
        raise FeatstoreError("nothing to predict")
    items = store.items_by_path()
    hashes = [items[k].hash for k in keys if k in items and items[k].status == "ok"]
    vectors = store.vectors_for_hashes(s, hashes)
    ok = [k for k in keys if k in items and items[k].hash in vectors]
    outputs = head.run(np.stack([vectors[items[k].hash] for k in ok])) if ok else []
    by_key = dict(zip(ok, outputs))
    rows = []
    for key in keys:
        item = items.get(key)
        if key not in by_key:
            rows.append({"path": key, "label": None, "probability": None, "status": "failed",
                         "error": (item.error if item else None) or "not embedded"})
        elif head.task_type == "regression":
            rows.append({"path": key, "label": None, "value": round(float(by_key[key][0]), 6),
                         "probability": None, "status": "ok", "error": None})
        else:
            p = by_key[key]
            best = int(p.argmax())
            rows.append({"path": key, "label": head.outputs[best], "probability": round(float(p[best]), 6),
                         "status": "ok", "error": None,
                         "probabilities": {c: round(float(v), 6) for c, v in zip(head.outputs, p)}})
    return {"head": head_name, "kind": record["kind"], "task": record["task"], "task_type": head.task_type,
            "model": s.model, "embedded_now": summary.embedded if summary else 0,
            "predictions": rows}


def _text_records(paths: list[str]) -> list:
    """Texts to predict: .txt files, folders of them, or text tables (column 'text')."""
    records = []
    for p in paths:
        if not os.path.lexists(p):
            raise FeatstoreError(f"{display_path(str(p))}: no such file")
        records.extend(read_text_source(p)[0])
    return records
