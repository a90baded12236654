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
    keys, unusable, inputs = [], {}, []      # unusable: key -> why (never handed to the backbone, nor stored)
    for path in paths:
        try:
            got = _inputs(path, s.modality)
        except (FeatstoreError, OSError) as exc:
            key = display_path(os.path.abspath(path))
            keys.append(key)
            unusable[key] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            continue
        inputs += got
        keys += [g.key for g in got]
    run = embed_texts if s.modality == "text" else embed_files
    summary = run(store, inputs, backbone, s, pre, progress=progress) if inputs else None
    if not keys:
        raise FeatstoreError("nothing to predict")
    items = store.items_by_path()
    hashes = [items[k].hash for k in keys if k in items and items[k].status == "ok"]
    vectors = store.vectors_for_hashes(s, hashes)
    ok = [k for k in keys if k not in unusable and k in items and items[k].hash in vectors]
    outputs = head.run(np.stack([vectors[items[k].hash] for k in ok])) if ok else []
    by_key = dict(zip(ok, outputs))
    rows = []
    for key in keys:
        item = items.get(key)
        error = None if key in by_key and key not in unusable else \
            unusable.get(key) or (item.error if item else None) or "not embedded"
        rows.append(prediction_row(head, key, None if error else by_key[key], error))
    return {"head": head_name, "kind": record["kind"], "task": record["task"], "task_type": head.task_type,
            "model": s.model, "embedded_now": summary.embedded if summary else 0,
            "predictions": rows}


def _inputs(path: str, modality: str) -> list:
    """What one path holds to predict: image files (a file, or a folder of them), or texts (a .txt file, a folder
    of them, or a text table with a 'text' column). A path that cannot be one raises, for its row to say why."""
    if not os.path.lexists(path):
        raise FeatstoreError("no such file")
    return read_text_source(path)[0] if modality == "text" else from_paths([path])


def predict_unstored(store: Store, head_name: str, files: list[tuple[str, str]] = (), texts: list[str] = (),
                     backbones: dict | None = None) -> dict:
    """A head applied to files (name shown, local path) or texts without writing anything: a content already in
    the head's set uses its stored vector, anything else is embedded for this call only. An input that cannot be
    used comes back with status 'failed' and the reason."""
    from featstore.embed.local import embed_query
    from featstore.embed.text import embed_query_text
    from featstore.errors import DecodeError
    from featstore.hashing import content_hash

    head, record = load_head(store, head_name)
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r} was fitted on embedding set {record['set_id']}, "
                             "which is no longer in this store")
    if (s.modality == "text") != bool(texts) or (files and texts):
        raise FeatstoreError(f"head {head_name!r} reads {s.modality}: give " + ("texts" if s.modality == "text"
                                                                                 else "image files"))
    backbones = {} if backbones is None else backbones
    if s.set_id not in backbones:
        backbones[s.set_id] = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "cpu")
    backbone, pre = backbones[s.set_id]
    names, vectors, errors = [], [], {}
    for name, path in files:
        names.append(name)
        try:
            with open(path, "rb") as f:
                stored = store.vectors_for_hashes(s, [content_hash(f.read())])
            vectors.append(next(iter(stored.values())) if stored else embed_query(path, backbone, pre)[0])
        except (DecodeError, OSError, FeatstoreError) as exc:
            errors[len(names) - 1] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            vectors.append(None)
    for text in texts:
        names.append(text)
        vectors.append(embed_query_text(text, backbone, pre) if text.strip() else None)
        if not text.strip():
            errors[len(names) - 1] = "empty text"
    if not names:
        raise FeatstoreError("nothing to predict")
    ok = [i for i, v in enumerate(vectors) if v is not None]
    outputs = dict(zip(ok, head.run(np.stack([vectors[i] for i in ok])))) if ok else {}
    rows = [prediction_row(head, name, outputs.get(i), None if i in outputs else errors[i])
            for i, name in enumerate(names)]
    return {"head": head_name, "kind": record["kind"], "task": record["task"], "task_type": head.task_type,
            "model": s.model, "embedded_now": 0, "predictions": rows}


def prediction_row(head, path: str, output, error: str | None) -> dict:
    """One input's row: its label and probabilities (a value for regression), or status failed and why."""
    if error is not None:
        return {"path": path, "label": None, "probability": None, "status": "failed", "error": error}
    if head.task_type == "regression":
        return {"path": path, "label": None, "value": round(float(output[0]), 6), "probability": None,
                "status": "ok", "error": None}
    best = int(output.argmax())
    return {"path": path, "label": head.outputs[best], "probability": round(float(output[best]), 6),
            "status": "ok", "error": None,
            "probabilities": {c: round(float(v), 6) for c, v in zip(head.outputs, output)}}
