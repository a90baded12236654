"""Predict: a stored head applied to files. Contents the head's set holds use their stored vector; the rest are
embedded for the call only, or (add) embedded and stored like `embed` does."""
from __future__ import annotations

import os

import numpy as np

from featstore.embed.local import embed_files
from featstore.embed.text import embed_texts
from featstore.errors import FeatstoreError
from featstore.heads.storage import load_head
from featstore.embed.backbones import backbone_for_set
from featstore.embed.source import SourceFile, from_paths
from featstore.paths import display_path
from featstore.store.db import Store
from featstore.embed.text_source import TextRecord, read_text_source

BATCH = 32          # inputs per backbone run when predicting without storing


def predict(store: Store, head_name: str, paths: list[str], progress: bool = True, add: bool = False) -> dict:
    """Label and probability per file (or text); inputs that cannot be used come back with status 'failed'. The
    store is not written unless `add`: then the new inputs are embedded and stored (unlabelled)."""
    head, record = load_head(store, head_name)
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r} was fitted on embedding set {record['set_id']}, "
                             "which is no longer in this store")
    backbone, pre = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "cpu")
    keys, unusable, inputs = _expand(paths, s.modality)
    if not keys:
        raise FeatstoreError("nothing to predict")
    outputs, errors, embedded = _head_outputs(store, head_name, head, record, s, (backbone, pre), inputs, add,
                                              progress)
    rows = [prediction_row(head, k, outputs.get(k), None if k in outputs else
                           unusable.get(k) or errors.get(k) or "not embedded") for k in keys]
    return {"head": head_name, "kind": record["kind"], "task": record["task"], "task_type": head.task_type,
            "model": s.model, "embedded_now": embedded, "predictions": rows}


def _head_outputs(store: Store, head_name: str, head, record: dict, s, runner: tuple, inputs: list, add: bool = False,
                  progress: bool = False, sessions: dict | None = None) -> tuple[dict, dict, int]:
    """(key -> the head's output, key -> why an input failed, contents embedded now) for `inputs`; `runner`: the
    set's (backbone, preprocessing). With `add` the new inputs are embedded and stored first, as `embed` does. A
    fine-tuned head runs its fused model (bottom graph, tuned top and head in one: predict_finetune.py) on every
    input, kept loaded in `sessions` across calls (the server); any other head reads the inputs' vectors, stored
    or embedded for this call only."""
    backbone, pre = runner
    if record["kind"] == "finetune":
        from featstore.apps.predict_finetune import fused_outputs, fused_session

        embedded = _vectors_stored(store, s, backbone, pre, inputs, progress)[2] if add else 0
        sessions = {} if sessions is None else sessions
        key = ("fused", head_name, record["created_at"])
        if key not in sessions:
            sessions[key] = fused_session(store, head_name)
        return *fused_outputs(sessions[key], s, pre, inputs), embedded
    if add:
        vectors, errors, embedded = _vectors_stored(store, s, backbone, pre, inputs, progress)
    else:
        vectors, errors, embedded = _vectors_unstored(store, s, backbone, pre, inputs)
    ok = [g.key for g in inputs if g.key in vectors]
    return (dict(zip(ok, head.run(np.stack([vectors[k] for k in ok])))) if ok else {}), errors, embedded


def _expand(paths: list[str], modality: str) -> tuple[list[str], dict, list]:
    """(every input's key in order, key -> why a path is unusable, the inputs to embed) for the paths given."""
    keys, unusable, inputs = [], {}, []      # unusable: never handed to the backbone, nor stored
    for path in paths:
        try:
            got = _inputs(path, modality)
        except (FeatstoreError, OSError) as exc:
            key = display_path(os.path.abspath(path))
            keys.append(key)
            unusable[key] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            continue
        inputs += got
        keys += [g.key for g in got]
    return keys, unusable, inputs


def _vectors_stored(store: Store, s, backbone, pre, inputs: list, progress: bool) -> tuple[dict, dict, int]:
    """(key -> vector, key -> why it failed, how many contents were embedded): the inputs embedded and stored."""
    run = embed_texts if s.modality == "text" else embed_files
    summary = run(store, inputs, backbone, s, pre, progress=progress) if inputs else None
    items = store.items_by_path()
    ok = {g.key: items[g.key].hash for g in inputs if g.key in items and items[g.key].status == "ok"}
    stored = store.vectors_for_hashes(s, list(set(ok.values())))
    errors = {g.key: items[g.key].error for g in inputs if g.key in items and items[g.key].error}
    return {k: stored[h] for k, h in ok.items() if h in stored}, errors, summary.embedded if summary else 0


def _vectors_unstored(store: Store, s, backbone, pre, inputs: list) -> tuple[dict, dict, int]:
    """(key -> vector, key -> why it failed, how many contents the backbone ran on) without writing the store: a
    content the set holds uses its stored vector, the others are embedded BATCH at a time."""
    hashes, errors, vectors, pending, embedded = {}, {}, {}, {}, 0    # pending: hash -> pixels or text to embed
    for g in inputs:
        h, error = _queue(store, s, pre, g, vectors, pending)
        if error is None:
            hashes[g.key] = h
        else:
            errors[g.key] = error
        if len(pending) >= BATCH:
            embedded += _flush(backbone, pre, s.modality, pending, vectors)
    embedded += _flush(backbone, pre, s.modality, pending, vectors)
    return {k: vectors[h] for k, h in hashes.items()}, errors, embedded


def _queue(store: Store, s, pre, g, vectors: dict, pending: dict) -> tuple[str | None, str | None]:
    """One input's content hash, its vector read into `vectors` or its pixels (text) put in `pending`; or why it
    cannot be used."""
    from featstore.embed.decode import pixels_into, read_hashed
    from featstore.hashing import content_hash

    if g.error:
        return None, g.error
    prep = None if s.modality == "text" else read_hashed(g.path)
    if prep is not None and prep.error:
        return None, prep.error
    h = prep.hash if prep is not None else content_hash(g.text.encode("utf-8"))
    if h not in vectors and h not in pending:
        vectors.update(store.vectors_for_hashes(s, [h]))
    if h in vectors or h in pending:
        return h, None
    if prep is not None:
        pixels_into(prep, prep.data, pre)
        if prep.error:
            return None, prep.error
    pending[h] = g.text if prep is None else prep.pixels
    return h, None


def _flush(backbone, pre, modality: str, pending: dict, vectors: dict) -> int:
    """Embed the pending pixels (or texts) into `vectors`; returns how many."""
    if not pending:
        return 0
    chunk = list(pending.values())
    got = backbone.run_feeds(pre.encode(chunk).feeds) if modality == "text" else \
        backbone.run_pixels(np.stack(chunk), pre)
    vectors.update(zip(pending, got))
    n = len(pending)
    pending.clear()
    return n


def _inputs(path: str, modality: str) -> list:
    """What one path holds to predict: image files (a file, or a folder of them), or texts (a .txt file, a folder
    of them, or a text table with a 'text' column). A path that cannot be one raises, for its row to say why."""
    if not os.path.lexists(path):
        raise FeatstoreError("no such file")
    return read_text_source(path)[0] if modality == "text" else from_paths([path])


def predict_unstored(store: Store, head_name: str, files: list[tuple[str, str]] = (), texts: list[str] = (),
                     backbones: dict | None = None) -> dict:
    """A head applied to files (name shown, local path) or texts without writing anything: a content already in
    the head's set uses its stored vector, anything else is embedded for this call only (_vectors_unstored, as
    `predict` without add). An input that cannot be used comes back with status 'failed' and the reason."""
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
    names = [name for name, _ in files] + list(texts)
    if not names:
        raise FeatstoreError("nothing to predict")
    inputs = [SourceFile(path=path, key=str(i), label=None, size=None, mtime=None) for i, (_, path) in
              enumerate(files)]                        # keyed by position: two uploads may share a name
    inputs += [TextRecord(key=str(i), text=text, label=None, size=None, mtime=None,
                          error=None if text.strip() else "empty text") for i, text in enumerate(texts)]
    outputs, errors, _ = _head_outputs(store, head_name, head, record, s, (backbone, pre), inputs,
                                       sessions=backbones)
    rows = [prediction_row(head, name, outputs.get(str(i)), None if str(i) in outputs else
                           errors.get(str(i), "not embedded")) for i, name in enumerate(names)]
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
