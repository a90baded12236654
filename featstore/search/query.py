"""Search: nearest stored items to a query file or a stored item, by cosine similarity through FAISS."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featstore.embed.local import embed_query
from featstore.embed.text import embed_query_text
from featstore.errors import FeatstoreError
from featstore.store.index import normalise_rows, open_index, read_stamp, search as index_search
from featstore.store.index_kinds import on_gpu
from featstore.hashing import content_hash
from featstore.embed.backbones import backbone_for_set, partner_backbone, partner_spec
from featstore.paths import display_path
from featstore.store.db import Store
from featstore.store.labels import task_for
from featstore.store.vanished import REMOVED
from featstore.store.where_guard import ItemFilter, check_where
from featstore.user_csv import read_user_csv


def _set_holding(store: Store, content: str | None, model: str | None):
    """The set to search around a stored item: the one asked for, else the newest holding its vector."""
    if model is not None or not content:
        return store.pick_set(model)
    for s in reversed(store.sets()):
        if store.vec_ids_for_hashes(s, [content]):
            return s
    return store.pick_set(None)


EXACT_SUBSET = 50_000      # --where: passing vectors scored exactly in numpy per chunk (and always up to this many)
SUBSET_FRACTION = 0.05     # --where passing more than this share of the set (and > EXACT_SUBSET): post-filter the index


def filtered_vec_ids(store: Store, s, where: ItemFilter, task: str | None) -> np.ndarray:
    """vec_ids of the set whose items pass a checked condition, evaluated in DuckDB over one row per ok item:
    item_id, path, hash, size, mtime, width, height, updated_at, label and split (of the task shown), text."""
    rows = store.passing_rows(where, task, f"SELECT vec_id FROM {s.table} WHERE hash IN (SELECT hash FROM {{items}})",
                              fetch=lambda cur: cur.fetchnumpy())
    return np.asarray(rows["vec_id"], dtype=np.int64)


def postfilter_topk(index, q: np.ndarray, k: int, passing: np.ndarray, fraction: float):
    """Top-k passing items by searching the index for k / fraction x 4 neighbours, doubling until k pass (or
    everything was searched). `passing` is a boolean mask indexed by vec_id."""
    want = min(int(np.ceil(k / max(fraction, 1e-9) * 4)), index.ntotal)
    while True:
        scores, ids = index.search(q, max(want, 1))
        keep = [[(sc, i) for sc, i in zip(srow, irow) if 0 <= i < len(passing) and passing[i]][:k]
                for srow, irow in zip(scores.tolist(), ids.tolist())]
        if all(len(r) == k for r in keep) or want >= index.ntotal:
            break
        want = min(want * 2, index.ntotal)
    width = max((len(r) for r in keep), default=0)
    out_s = np.full((len(q), width), -np.inf, np.float32)
    out_i = np.full((len(q), width), -1, np.int64)
    for row, r in enumerate(keep):
        for col, (sc, i) in enumerate(r):
            out_s[row, col], out_i[row, col] = sc, i
    return out_s, out_i


def _filtered_search(store: Store, s, vec: np.ndarray, ids: np.ndarray, fraction: float, k: int):
    """Top-k among the given vec_ids only. A selective filter (at most SUBSET_FRACTION of the live vectors, or
    at most EXACT_SUBSET of them) scores exactly the passing vectors, read EXACT_SUBSET at a time; a broad one
    searches the index and drops what fails, asking for more neighbours until k pass."""
    if len(ids) == 0:
        return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
    q = normalise_rows(vec[None])[0]
    if fraction > SUBSET_FRACTION and len(ids) > EXACT_SUBSET:
        passing = np.zeros(int(ids.max()) + 1, bool)
        passing[ids] = True
        return postfilter_topk(open_index(store, s), q[None], k, passing, fraction)
    best_scores, best_ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
    for start in range(0, len(ids), EXACT_SUBSET):
        keys, vecs = store.vectors_for_ids(s, ids[start:start + EXACT_SUBSET])
        scores = normalise_rows(vecs) @ q
        best_scores, best_ids = np.concatenate([best_scores, scores]), np.concatenate([best_ids, keys])
        top = np.argsort(-best_scores, kind="stable")[:k]
        best_scores, best_ids = best_scores[top], best_ids[top]
    return best_scores[None], best_ids[None]


@dataclass
class Query:
    """One query: an image file, a stored item id, or a text."""

    kind: str          # "file" | "id" | "text"
    value: object


def search(store: Store, like: str | None = None, item_id: int | None = None, k: int = 10,
           model: str | None = None, task: str | None = None, text: str | None = None,
           where: str | None = None) -> dict:
    """Neighbours of a query file or text (embedded on the fly, not stored) or of a stored item (itself
    excluded)."""
    if sum(q is not None for q in (like, item_id, text)) != 1:
        raise FeatstoreError("give exactly one query: --like FILE, --text TEXT or --id ITEM_ID")
    query = Query("text", text) if text is not None else Query("id", item_id) if item_id is not None \
        else Query("file", like)
    return search_many(store, [query], k, model, task, where)[0]


def search_many(store: Store, queries: list[Query], k: int = 10, model: str | None = None, task: str | None = None,
                where: str | None = None, backbones: dict | None = None, indexes: dict | None = None) -> list[dict]:
    """Neighbours for a batch of queries; backbones, indexes and --where subsets are prepared once per set (a
    long-running caller passes its own `backbones` and `indexes` dicts, set_id -> object, to keep them)."""
    if k < 1:
        raise FeatstoreError("-k must be at least 1")
    where = None if where is None else check_where(where)
    task = task_for(store, task)
    backbones = {} if backbones is None else backbones
    indexes = {} if indexes is None else indexes
    subsets = {}
    out = []
    for query in queries:
        s, vec, exclude, name = _query_vector(store, query, model, backbones)
        extra = 1 if exclude else 0
        passing = None
        if where:
            if s.set_id not in subsets:
                passing = filtered_vec_ids(store, s, where, task)
                subsets[s.set_id] = passing, len(passing) / max(store.live_count(s), 1)
            passing, fraction = subsets[s.set_id]
            scores, ids = _filtered_search(store, s, vec, passing, fraction, k + extra)
        else:
            if s.set_id not in indexes:
                indexes[s.set_id] = on_gpu(open_index(store, s), (read_stamp(store, s) or {}).get("kind", "flat"))
            scores, ids = index_search(indexes[s.set_id], vec[None], k + extra)
        found = [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0]) if i >= 0]
        info = store.describe_vecs(s, [i for i, _ in found], task, where)
        results = []
        for vid, score in found:
            if vid not in info or info[vid]["hash"] == exclude:
                continue
            results.append({"rank": len(results) + 1, "score": round(score, 6), **info[vid]})
            if len(results) == k:
                break
        out.append({"query": name, "model": s.model, "set_id": s.set_id, "task": task, "k": k,
                    "where": None if where is None else where.text,
                    "passing": None if passing is None else int(len(passing)), "results": results,
                    "note": None if passing is None or len(passing) else no_match_note(where, task)})
    return out


def no_match_note(where, task: str | None) -> str:
    """Why a --where may match nothing: the task its label and split columns were read against."""
    against = f"task {task!r}" if task else "no task (the store has no labels)"
    return f"--where {str(where)!r} matched no items; label and split were read against {against}"


def set_for_query(store: Store, model: str | None, modality: str):
    """The set a text or image query ranks: the one asked for (of either modality: a dual encoder's other tower
    embeds the query), else the newest of the query's modality, else the newest whose model has a tower for it."""
    if model is not None:
        return store.pick_set(model)
    sets = store.sets()
    if not any(s.modality == modality for s in sets):
        crossing = [s for s in sets if _tower_for(s) == modality]
        if crossing:
            return crossing[-1]
    return store.pick_set(None, modality=modality)


def _tower_for(s) -> str | None:
    """The modality of the other tower of set `s`'s model (a dual encoder), or None."""
    other = partner_spec(s)
    return other.modality if other is not None else None


def _query_vector(store: Store, query: Query, model: str | None, backbones: dict):
    """(set, vector, content hash to exclude or None, display name) for one query."""
    def backbone(s, modality: str | None = None):
        key = (s.set_id, modality)
        if key not in backbones:
            device = "cuda" if s.provider == "cuda" else "auto"
            backbones[key] = (backbone_for_set(s, device=device) if modality in (None, s.modality)
                              else partner_backbone(s, device=device))
        return backbones[key]

    if query.kind == "text":
        text = str(query.value)
        if not text.strip():
            raise FeatstoreError("--text: the query is empty")
        s = set_for_query(store, model, "text")
        return s, embed_query_text(text, *backbone(s, "text")), None, repr(text)
    if query.kind == "id":
        item = store.item(int(query.value))
        if item.status == REMOVED:      # out of search both ways: not a result, not a query
            raise FeatstoreError(f"item {item.item_id} ({item.path}) was removed (gone from its folder or table "
                                 f"at the last embed); search --like FILE takes a file")
        s = _set_holding(store, item.hash, model)
        vec = store.vectors_for_hashes(s, [item.hash] if item.hash else []).get(item.hash)
        if vec is None:
            raise FeatstoreError(f"item {item.item_id} ({item.path}) has no {s.model} vector "
                                 f"(status {item.status}{': ' + item.error if item.error else ''})")
        return s, vec, item.hash, item.path
    s = set_for_query(store, model, "image")
    path = str(query.value)
    name = display_path(path)
    try:
        with open(path, "rb") as f:
            stored = store.vectors_for_hashes(s, [content_hash(f.read())]) if s.modality == "image" else {}
    except OSError as exc:
        raise FeatstoreError(f"{name}: cannot read query file ({exc.strerror})") from None
    if stored:
        return s, next(iter(stored.values())), None, name
    return s, embed_query(path, *backbone(s, "image"))[0], None, name


def read_queries(path: str) -> list[Query]:
    """Queries from a CSV with a header naming one of the columns path, id or text."""
    cols, rows = read_user_csv(path)
    col = next((c for c in ("path", "id", "text") if c in cols), None)
    if col is None:
        raise FeatstoreError(f"{path}: needs a header with a 'path', 'id' or 'text' column "
                             f"(found: {', '.join(cols) or 'no header'})")
    kind = {"path": "file", "id": "id", "text": "text"}[col]
    queries = []
    for line, row in enumerate(rows, start=2):
        value = row.get(col, "")
        if kind == "id" and not value.isdigit():
            raise FeatstoreError(f"{path}: line {line}: id {value!r} is not a number")
        if kind == "file" and not os.path.isabs(value):
            value = os.path.join(os.path.dirname(os.path.abspath(path)), value)
        queries.append(Query(kind, int(value) if kind == "id" else value))
    return queries
