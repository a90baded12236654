"""What the web app's item page shows about one item beyond its record: every stored head's prediction (the top
classes with their probabilities), the audit findings that name it with their reasons, its exact copies (other
items holding the same content) and its tags and exclusion."""
from __future__ import annotations

import numpy as np

from featstore.apps import grid
from featstore.store.db import Store

TOP = 3


def item_view(store: Store, memo: dict, root, item_id: int, task: str | None) -> dict:
    """{"predictions": [{head, task, kind, top: [[class, p], ...]} | {head, value}], "findings": [...],
    "copies": [{item_id, path}], "tags": [...], "excluded": reason | None} for one ok item."""
    from featstore.heads.storage import head_records, load_head
    from featstore.heads.stored_run import outputs_for

    item = store.item(item_id)
    b = grid.base(store, memo)
    row = int(np.searchsorted(b.ids, item_id))
    known = row < len(b.ids) and b.ids[row] == item_id
    predictions = []
    for record in head_records(store):
        s = store.get_set(record["set_id"])
        vec = store.vectors_for_hashes(s, [item.hash]).get(item.hash) if s is not None and item.hash else None
        if vec is None:
            continue
        head, _ = load_head(store, record["name"])
        out = outputs_for(store, head, record, [item.hash], vec[None, :])[0]
        entry = {"head": record["name"], "task": record["task"], "kind": record["kind"]}
        if head.task_type == "classification":
            order = np.argsort(-out)[:TOP]
            entry["top"] = [[head.outputs[i], round(float(out[i]), 4)] for i in order]
        else:
            entry["value"] = round(float(out[0]), 4)
        predictions.append(entry)
    copies = [{"item_id": int(i), "path": p} for i, p in store.con.execute(
        "SELECT item_id, path FROM items WHERE status = 'ok' AND hash = ? AND item_id <> ? ORDER BY item_id LIMIT 50",
        [item.hash, item_id]).fetchall()] if item.hash else []
    out = {"predictions": predictions, "copies": copies, "findings": [], "tags": [], "excluded": None}
    if known:
        cur = grid.curation(store, memo, task)
        out["findings"] = [_finding(f) for f in cur.reasons.get(row, [])]
        out["tags"] = sorted(t for t, m in cur.tags.items() if m[row])
        out["excluded"] = cur.excluded.value(row)
    return out


def _finding(f: dict) -> dict:
    keep = {k: f.get(k) for k in ("kind", "score", "given", "suggested", "group", "reason")}
    if isinstance(keep["score"], float):
        keep["score"] = round(keep["score"], 4)
    return keep
