"""Search: nearest stored items to a query file or a stored item, by cosine similarity through FAISS."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featstore.embed.local import embed_query
from featstore.embed.text import embed_query_text
from featstore.errors import FeatstoreError
from featstore.search.filtered import filtered_topk
from featstore.store.index import normalise_rows, open_index, read_stamp
from featstore.store.index_kinds import on_gpu, refined_search
from featstore.hashing import content_hash
from featstore.embed.backbones import backbone_for_set, partner_backbone, partner_spec
from featstore.paths import display_path
from featstore.store.db import Store
from featstore.store.labels import several_tasks_note, shown_task
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


@dataclass
class Passing:
    """The contents of a set whose items pass a condition: their vec_ids (sorted) and, for each, the first passing
    item by path (id, path, label), which a result of that content stands for."""

    vec_ids: np.ndarray
    item_ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray

    def standing(self, vec_id: int) -> dict:
        i = int(np.searchsorted(self.vec_ids, vec_id))
        return {"item_id": int(self.item_ids[i]), "path": self.paths[i], "label": self.labels[i]}


def filtered_vec_ids(store: Store, s, where: ItemFilter, task: str | None) -> Passing:
    """What of the set passes a checked condition, evaluated in DuckDB over one row per ok item: item_id, path,
    hash, size, mtime, width, height, updated_at, label and split (of the task shown), text, and the store's
    metadata columns. Read once per
    condition while the store is unchanged (store.passing)."""
    def read() -> Passing:
        rows = store.passing_rows(where, task, f"""
            SELECT e.vec_id, item.item_id, item.path, item.label FROM {{items}} AS item
            JOIN {s.table} e ON e.hash = item.hash
            QUALIFY row_number() OVER (PARTITION BY e.vec_id ORDER BY item.path) = 1 ORDER BY e.vec_id""",
                                  fetch=lambda cur: cur.fetchnumpy())
        return Passing(np.asarray(rows["vec_id"], np.int64), np.asarray(rows["item_id"], np.int64),
                       np.asarray(rows["path"], object), np.asarray(rows["label"], object))

    return store.passing((s.set_id, where.sql, task), read)


@dataclass
class Query:
    """One query: an image file, a stored item id, or a text."""

    kind: str          # "file" | "id" | "text" | "vector"
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
    where = None if where is None else check_where(where, store.metadata_columns())
    task = shown_task(store, task, where)        # a task only where labels are read: shown, or --where reads them
    unlabelled = several_tasks_note(store, task)
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
                subsets[s.set_id] = filtered_vec_ids(store, s, where, task), store.live_count(s)
            passing, live = subsets[s.set_id]
            index, kind = _cpu_index(store, s, indexes)         # FAISS's selectors run on the CPU index
            scores, ids = filtered_topk(index, kind, vec[None], k + extra, passing.vec_ids, live,
                                        stored_vectors(store, s))
        else:
            index, kind = _index(store, s, indexes)
            scores, ids = refined_search(index, kind, normalise_rows(vec[None]), k + extra, stored_vectors(store, s))
        found = [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0]) if i >= 0]
        info = store.describe_vecs(s, [i for i, _ in found], task)
        if passing is not None:        # each result stands for its first passing item, not its first item
            info = _own_meta(store, {vid: d | passing.standing(vid) for vid, d in info.items()})
        results = []
        for vid, score in found:
            if vid not in info or info[vid]["hash"] == exclude:
                continue
            results.append({"rank": len(results) + 1, "score": round(score, 6), **info[vid]})
            if len(results) == k:
                break
        out.append({"query": name, "query_kind": query.kind, "model": s.model, "set_id": s.set_id, "task": task,
                    "k": k, "where": None if where is None else where.text,
                    "passing": None if passing is None else int(len(passing.item_ids)), "results": results,
                    "note": unlabelled if passing is None or len(passing.vec_ids) else no_match_note(where, task)})
    return out


def _own_meta(store: Store, info: dict) -> dict:
    """Results that stand for another item than the first of their content, with that item's metadata."""
    if not any("meta" in d for d in info.values()):
        return info
    metas = store.meta_by_path([d["path"] for d in info.values()])
    return {vid: d | {"meta": metas[d["path"]]} for vid, d in info.items()}


def _kind(store: Store, s, indexes: dict) -> str:
    """The kind of the set's index (from its stamp), kept in `indexes` (the server's snapshot puts it there)."""
    key = ("kind", s.set_id)
    if key not in indexes:
        indexes[key] = (read_stamp(store, s) or {}).get("kind", "flat")
    return indexes[key]


def _index(store: Store, s, indexes: dict):
    """(the set's index, on every GPU where FAISS sees one, and its kind), kept in `indexes` by set_id."""
    kind = _kind(store, s, indexes)
    if s.set_id not in indexes:
        indexes[s.set_id] = on_gpu(open_index(store, s), kind)
    return indexes[s.set_id], kind


def stored_vectors(store: Store, s):
    """fetch(vec_ids) -> their stored vectors as unit rows, in that order (zeros for any not found)."""
    def fetch(ids: np.ndarray) -> np.ndarray:
        got, vectors = store.vectors_for_ids(s, np.asarray(ids, np.int64))
        out = np.zeros((len(ids), s.dim), np.float32)
        where = {int(v): i for i, v in enumerate(ids)}
        out[[where[int(v)] for v in got]] = normalise_rows(vectors)
        return out
    return fetch


def _cpu_index(store: Store, s, indexes: dict):
    """(the set's index on the CPU, its kind), kept in `indexes` beside the (perhaps GPU) one plain searches use."""
    key = ("cpu", s.set_id)
    if key not in indexes:
        indexes[key] = open_index(store, s), _kind(store, s, indexes)
    return indexes[key]


def no_match_note(where, task: str | None) -> str:
    """Why a --where may match nothing: the task its label and split columns were read against."""
    against = f"task {task!r}" if task else "no task (the store has no labels)"
    return f"--where {str(where)!r} matched no items; label and split were read against {against}"


def set_for_query(store: Store, model: str | None, modality: str, task: str | None = None):
    """The set a text or image query ranks (search; a zero-shot head's class prompts, with the task whose items
    it must hold): the one asked for (of either modality: a dual encoder's other tower embeds the query), else
    the newest of the query's modality, else the newest whose model has a tower for it."""
    if model is not None:
        return store.pick_set(model)
    sets = [s for s in store.sets() if task is None or store.labelled_count(s, task)]
    own = [s for s in sets if s.modality == modality]
    crossing = [s for s in sets if _tower_for(s) == modality]
    if own or crossing:
        return (own or crossing)[-1]
    if task is not None:
        return store.set_for_task(task, None)         # none can: the newest with the task (its use says why)
    return store.pick_set(None, modality=modality)     # nothing embedded with that modality: says so


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

    if query.kind == "vector":
        s, vec = vector_query(store, query.value, model)
        return s, vec, None, f"vector ({len(vec)} values)"
    if query.kind == "text":
        text = str(query.value)
        if not text.strip():
            raise FeatstoreError("--text: the query is empty")
        s = set_for_query(store, model, "text")
        return s, embed_query_text(text, *backbone(s, "text")), None, text
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


def vector_query(store: Store, value, model: str | None):
    """(the set a ready-made vector is searched in, the vector as float32): the set named, else the newest whose
    dimension it has; one line when its shape, values or dimension do not fit."""
    vec = np.asarray(value, dtype=np.float64)
    if vec.ndim != 1 or len(vec) == 0:
        raise FeatstoreError(f"a vector query is one row of numbers, got an array of shape {vec.shape}")
    if not np.all(np.isfinite(vec)) or not np.any(vec):
        raise FeatstoreError("a vector query must be finite and not all zeros")
    if model is not None:
        s = store.pick_set(model)
        if s.dim != len(vec):
            raise FeatstoreError(f"the vector has {len(vec)} values; set {s.set_id} ({s.model}) holds vectors of "
                                 f"{s.dim}")
        return s, vec.astype(np.float32)
    sets = [s for s in store.sets() if s.dim == len(vec)]
    if not sets:
        dims = ", ".join(sorted({f"{s.dim} ({s.model})" for s in store.sets()})) or "no sets yet"
        raise FeatstoreError(f"no embedding set holds vectors of {len(vec)} values (this store's: {dims})")
    return sets[-1], vec.astype(np.float32)


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
