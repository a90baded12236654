"""FAISS index over an embedding set: cosine similarity (inner product of L2-normalised vectors).

DuckDB is the truth; an index file is a cache stamped with the store generation it reflects, its kind (see
index_kinds.py), tuned search parameter and measured recall. Opening one whose stamp differs from the store's (a
crash, a newer embed, a superseded file) first brings it up to date from DuckDB, so the index and DuckDB never
disagree.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featstore import runtimes
from featstore.store import index_kinds as kinds
from featstore.store.db import EmbeddingSet, Store

faiss = runtimes.faiss()     # FAISS from the cpu or the gpu extra; without it, one line naming both


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32, C-contiguous."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def paths(store: Store, s: EmbeddingSet) -> tuple[Path, Path]:
    """(index file, stamp file) of an embedding set."""
    return store.root / "index" / f"{s.set_id}.faiss", store.root / "index" / f"{s.set_id}.json"


def read_stamp(store: Store, s: EmbeddingSet) -> dict | None:
    """The generation and count the set's index file was built for, or None if there is no readable stamp."""
    try:
        return json.loads(paths(store, s)[1].read_text())
    except (OSError, ValueError):
        return None


def is_current(store: Store, s: EmbeddingSet) -> bool:
    """True when the set's index file exists and its stamp matches the store's generation."""
    stamp = read_stamp(store, s)
    return stamp is not None and stamp.get("generation") == store.generation() and paths(store, s)[0].exists()


def open_index(store: Store, s: EmbeddingSet) -> faiss.Index:
    """The set's index with its tuned search parameter, brought up to date from DuckDB first if it is stale."""
    stamp = read_stamp(store, s)
    if is_current(store, s):
        index = _read(store, s)
        if index is not None and index.ntotal == stamp.get("count"):
            kinds.set_param(index, stamp.get("kind", "flat"), stamp.get("params", {}))
            return index
    return refresh(store, s)


def _read(store: Store, s: EmbeddingSet) -> faiss.Index | None:
    try:
        return faiss.read_index(str(paths(store, s)[0]))
    except RuntimeError:   # missing or unreadable index file
        return None


def refresh(store: Store, s: EmbeddingSet, log=lambda msg: None) -> faiss.Index:
    """Bring the set's index in step with DuckDB's live vectors, incrementally where the kind allows.

    Live vectors the index does not hold are added (new ones, and old ones live again); vectors it holds that
    are no longer live are removed (flat, IVF); nothing to add or remove: only the stamp is rewritten. A full
    rebuild of the same kind happens when the file is missing or unreadable, when an HNSW index would need
    removals, when the counts still disagree afterwards, or, for IVF, when the data has drifted: the set has
    grown to DRIFT_GROWTH x the vectors the lists were trained on, or the new vectors sit DRIFT_ERROR x farther
    from their centroids than the training vectors did (then the lists are retrained and nprobe re-tuned)."""
    stamp = read_stamp(store, s) or {}
    kind = stamp.get("kind", "flat")
    if kind == "flat-ip":      # stamps written by featstore 0.1
        kind = "flat"
    index = _read(store, s) if stamp else None
    live_ids = store.live_ids(s)                # vectors are read only where they are needed
    changed = True
    if index is not None:
        held = kinds.ids_of(index)               # what the file holds, not what the stamp's ids suggest: a
        gone = np.setdiff1d(held, live_ids)      # vector live again (its item revived) has an old vec_id
        fresh_ids = np.setdiff1d(live_ids, held)
        if kind == "hnsw" and len(gone):
            index = None
        else:
            if len(gone):
                index.remove_ids(faiss.IDSelectorBatch(gone.astype(np.int64)))
            changed = bool(len(gone) or len(fresh_ids))
            sample = normalise_rows(store.vectors_for_ids(s, fresh_ids[:20000])[1]) if kind.startswith("ivf") \
                and len(fresh_ids) else None
            if sample is not None and _drifted(index, stamp, sample, len(live_ids)):
                log("the IVF lists no longer describe the data: retraining")
                index = None
            else:
                for start in range(0, len(fresh_ids), CHUNK):      # memory: one chunk of new vectors
                    new_ids, new_vecs = store.vectors_for_ids(s, fresh_ids[start:start + CHUNK])
                    kinds.add(index, new_ids, normalise_rows(new_vecs))
                if index.ntotal != len(live_ids):
                    index = None
    if index is None:
        return rebuild(store, s, kind, stamp.get("target_recall", DEFAULT_RECALL), log=log)
    if changed:
        _save(store, s, index, {**stamp, "kind": kind}, live_ids)
    else:       # the store changed elsewhere (another set, items only): restamp, do not rewrite a large file
        _write_stamp(store, s, {**stamp, "kind": kind}, index, live_ids)
    kinds.set_param(index, kind, stamp.get("params", {}))
    return index


DEFAULT_RECALL = 0.95
CHUNK = 4096               # vectors read from DuckDB at a time when filling an index
DRIFT_GROWTH = 2.0
DRIFT_ERROR = 1.25


def _drifted(index, stamp: dict, new_vecs: np.ndarray, n_live: int) -> bool:
    if n_live >= DRIFT_GROWTH * max(stamp.get("trained_count", n_live), 1):
        return True
    base = stamp.get("train_error")
    return bool(base) and kinds.quantisation_error(index, new_vecs) > DRIFT_ERROR * base


def rebuild(store: Store, s: EmbeddingSet, kind: str = "flat", target: float = DEFAULT_RECALL,
            memory: int | None = None, log=lambda msg: None) -> faiss.Index:
    """Build the set's index from scratch (kind 'auto' picks by count, dimension and memory) and save it. The
    vectors are read from DuckDB chunk by chunk (memory: the index, one chunk and the tuning samples). A `memory`
    budget given must hold the index (of some kind, for 'auto')."""
    source = StoreVectors(store, s)
    if memory is not None:
        kinds.check_budget(kind, len(source.ids), s.dim, memory)
    if kind == "auto":
        kind = kinds.choose(len(source.ids), s.dim, kinds.DEFAULT_MEMORY if memory is None else memory)
        log(f"auto: {kind} for {len(source.ids)} vectors of dimension {s.dim}")
    index, record = kinds.build_tuned(kind, source, s.dim, target, log=log)
    _save(store, s, index, record, source.ids)
    kinds.set_param(index, kind, record.get("params", {}))
    return index


class StoreVectors(kinds.Vectors):
    """A set's live vectors, L2-normalised, read from DuckDB CHUNK at a time or by vec_id."""

    def __init__(self, store: Store, s: EmbeddingSet):
        self.store, self.s, self.ids = store, s, store.live_ids(s)

    def chunks(self):
        for ids, vecs in self.store.iter_live_vectors(self.s, chunk=CHUNK, ids=self.ids):
            yield ids, normalise_rows(vecs)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), self.s.dim), np.float32)
        where = {int(i): k for k, i in enumerate(ids)}
        for start in range(0, len(ids), CHUNK):
            got_ids, vecs = self.store.vectors_for_ids(self.s, ids[start:start + CHUNK])
            out[[where[int(i)] for i in got_ids]] = normalise_rows(vecs)
        return out


def _save(store: Store, s: EmbeddingSet, index: faiss.Index, record: dict, live_ids: np.ndarray) -> None:
    index_path, stamp_path = paths(store, s)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_suffix(f".tmp{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, index_path)
    except BaseException:
        tmp.unlink(missing_ok=True)      # a half-written index (disk full) must not keep the space it took
        raise
    _write_stamp(store, s, record, index, live_ids)


def _write_stamp(store: Store, s: EmbeddingSet, record: dict, index: faiss.Index, live_ids: np.ndarray) -> None:
    """The stamp beside the index file: the store generation and the live vectors it reflects, and how it was
    built (kind, parameters, measured recall)."""
    index_path, stamp_path = paths(store, s)
    stamp = {**record, "generation": store.generation(), "count": int(index.ntotal),
             "max_vec_id": int(live_ids.max()) if len(live_ids) else 0,
             "bytes": index_path.stat().st_size}
    stamp_tmp = stamp_path.with_suffix(f".tmp{os.getpid()}")
    stamp_tmp.write_text(json.dumps(stamp))
    os.replace(stamp_tmp, stamp_path)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, vec_ids) of the k nearest stored vectors by cosine similarity; -1 ids pad short results."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    return index.search(normalise_rows(queries), k)
