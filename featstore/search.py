"""Search: nearest stored items to a query file or a stored item, by cosine similarity through FAISS."""
from __future__ import annotations

from .embed import embed_query
from .embed_text import embed_query_text
from .errors import FeatstoreError, one_of
from .index import open_index, search as index_search
from .hashing import content_hash
from .sets import backbone_for_set
from .source import display_path
from .store import Store


def default_task(store: Store, task: str | None) -> str | None:
    """The task whose labels are shown: the one asked for, else the one labelling the most items."""
    tasks = store.tasks()
    if task is not None:
        if task not in tasks:
            raise one_of("task", task, tasks)
        return task
    return max(sorted(tasks), key=lambda t: tasks[t], default=None)


def _set_holding(store: Store, content: str | None, model: str | None):
    """The set to search around a stored item: the one asked for, else the newest holding its vector."""
    if model is not None or not content:
        return store.pick_set(model)
    for s in reversed(store.sets()):
        if store.vectors_for_hashes(s, [content]):
            return s
    return store.pick_set(None)


def search(store: Store, like: str | None = None, item_id: int | None = None, k: int = 10,
           model: str | None = None, task: str | None = None, text: str | None = None) -> dict:
    """Neighbours of a query file or text (embedded on the fly, not stored) or of a stored item (itself
    excluded)."""
    if sum(q is not None for q in (like, item_id, text)) != 1:
        raise FeatstoreError("give exactly one query: --like FILE, --text TEXT or --id ITEM_ID")
    if k < 1:
        raise FeatstoreError("-k must be at least 1")
    exclude = None
    if text is not None:
        if not text.strip():
            raise FeatstoreError("--text: the query is empty")
        s = store.pick_set(model, modality="text")
        backbone, tokenizer = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "auto")
        vec, query_name = embed_query_text(text, backbone, tokenizer), repr(text)
    elif item_id is not None:
        item = store.item(item_id)
        s = _set_holding(store, item.hash, model)
        vec = store.vectors_for_hashes(s, [item.hash] if item.hash else []).get(item.hash)
        if vec is None:
            raise FeatstoreError(f"item {item_id} ({item.path}) has no {s.model} vector "
                                 f"(status {item.status}{': ' + item.error if item.error else ''})")
        exclude, query_name = item.hash, item.path
    else:
        s = store.pick_set(model, modality="image")
        query_name = display_path(like)
        try:
            with open(like, "rb") as f:
                stored = store.vectors_for_hashes(s, [content_hash(f.read())])
        except OSError as exc:
            raise FeatstoreError(f"{query_name}: cannot read query file ({exc.strerror})") from None
        if stored:
            vec = next(iter(stored.values()))
        else:
            backbone, pre = backbone_for_set(s, device="cuda" if s.provider == "cuda" else "auto")
            vec, _ = embed_query(like, backbone, pre)
    index = open_index(store, s)
    extra = 1 if exclude else 0
    scores, ids = index_search(index, vec[None], k + extra)
    task = default_task(store, task)
    found = [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0]) if i >= 0]
    info = store.describe_vecs(s, [i for i, _ in found], task)
    results = []
    for vid, score in found:
        if vid not in info or info[vid]["hash"] == exclude:
            continue
        results.append({"rank": len(results) + 1, "score": round(score, 6), **info[vid]})
        if len(results) == k:
            break
    return {"query": query_name, "model": s.model, "set_id": s.set_id, "task": task, "k": k, "results": results}

