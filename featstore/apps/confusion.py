"""A classification head's confusion matrix on its task's stored held-out split, with the items in each cell."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.heads.storage import load_head
from featstore.heads.stored_run import outputs_for
from featstore.store.db import Store


def confusion_cells(store: Store, head_name: str) -> dict:
    """{"labels", "matrix" (true x predicted counts), "cells": {"TRUE|PRED": [item ids]}} over the held-out
    contents of the head's task (one item per content: the first by path)."""
    head, record = load_head(store, head_name)
    if head.task_type != "classification":
        raise FeatstoreError(f"head {head_name!r} is a regression head; a confusion matrix needs classes")
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r}: its embedding set is no longer in this store")
    split = store.split_of(record["task"])
    hashes, vectors, truth = store.labelled(s, record["task"])
    test = [i for i, h in enumerate(hashes) if split.get(h) == "test"]
    if not test:
        raise FeatstoreError(f"task {record['task']!r} has no held-out split yet (fit a head first)")
    out = outputs_for(store, head, record, [hashes[i] for i in test], vectors[test])
    predicted = np.asarray(head.outputs)[out.argmax(axis=1)]
    item_of = dict(store.con.execute(
        "SELECT hash, min(item_id) FROM items WHERE status = 'ok' AND hash IN (SELECT unnest($1::VARCHAR[])) "
        "GROUP BY hash", [[hashes[i] for i in test]]).fetchall())
    labels = sorted(set(head.outputs) | {str(truth[i]) for i in test})
    where = {c: n for n, c in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    cells: dict[str, list[int]] = {}
    for i, p in zip(test, predicted):
        t = str(truth[i])
        matrix[where[t]][where[str(p)]] += 1
        cells.setdefault(f"{t}|{p}", []).append(int(item_of[hashes[i]]))
    return {"head": head_name, "task": record["task"], "labels": labels, "matrix": matrix,
            "cells": {k: sorted(v) for k, v in cells.items()}}
