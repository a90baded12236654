"""Heads in the store: a JSON record (kind, task, embedding set, parameters, metrics, program layout) plus named
float arrays. No pickle anywhere, so opening an untrusted store can never run code."""
from __future__ import annotations

import json

import numpy as np

from ..errors import FeatstoreError, one_of
from featstore.store.db import Store
from .program import Program, linear_program


def save_head(store: Store, name: str, kind: str, task: str, set_id: str, program: Program, params: dict,
              metrics: dict) -> None:
    params = dict(params, program=json.loads(program.layout()))
    with store.transaction():
        store.con.execute("DELETE FROM head_arrays WHERE head = ?", [name])
        store.con.execute("DELETE FROM heads WHERE name = ?", [name])
        store.con.execute("INSERT INTO heads (name, kind, task, set_id, classes, params, metrics) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [name, kind, task, set_id, json.dumps(program.outputs), json.dumps(params),
                           json.dumps(metrics)])
        arrays = program.named_arrays()
        if arrays:
            store.con.execute("INSERT INTO head_arrays SELECT $1, unnest($2::VARCHAR[]), unnest($3::INTEGER[][]), "
                              "unnest($4::DOUBLE[][])",
                              [name, list(arrays), [list(a.shape) for a in arrays.values()],
                               [a.ravel().astype(np.float64) for a in arrays.values()]])


def check_free(store: Store, names: list[str], force: bool = False) -> None:
    """Refuse to store a head under a name a stored head already has, unless `force` (checked before fitting)."""
    stored = set(head_names(store))
    taken = [n for n in names if n in stored]
    if taken and not force:
        what = f"a head named {taken[0]!r} exists" if len(taken) == 1 else \
            f"heads named {', '.join(map(repr, taken))} exist"
        raise FeatstoreError(f"{what}: pass --force to replace {'it' if len(taken) == 1 else 'them'}, "
                             "or --name to store under another name")


def remove_head(store: Store, name: str) -> dict:
    """Delete a stored head (its record and arrays); returns what it was."""
    record = next((r for r in head_records(store) if r["name"] == name), None)
    if record is None:
        raise one_of("head", name, head_names(store))
    with store.transaction():
        store.con.execute("DELETE FROM head_arrays WHERE head = ?", [name])
        store.con.execute("DELETE FROM heads WHERE name = ?", [name])
    return {"name": name, "kind": record["kind"], "task": record["task"], "set_id": record["set_id"]}


def head_names(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT name FROM heads ORDER BY name").fetchall()]


def head_records(store: Store) -> list[dict]:
    rows = store.con.execute("SELECT name, kind, task, set_id, classes, params, metrics, created_at FROM heads "
                             "ORDER BY name").fetchall()
    return [_record(r) for r in rows]


def load_head(store: Store, name: str) -> tuple[Program, dict]:
    """A stored head's Program and its record (kind, task, set_id, params, metrics)."""
    row = store.con.execute("SELECT name, kind, task, set_id, classes, params, metrics, created_at FROM heads "
                            "WHERE name = ?", [name]).fetchone()
    if row is None:
        raise one_of("head", name, head_names(store))
    record = _record(row)
    arrays = {k: np.asarray(d, dtype=np.float32).reshape(shape) for k, shape, d in store.con.execute(
        "SELECT name, shape, data FROM head_arrays WHERE head = ?", [name]).fetchall()}
    layout = record["params"].get("program")
    try:
        if layout is None:      # heads written by featstore 0.1: standardise + linear + softmax, named arrays
            return linear_program(arrays["mean"], arrays["scale"], arrays["coef"].T, arrays["intercept"],
                                  record["classes"]), record
        return Program.from_stored(json.dumps(layout), arrays), record
    except KeyError as exc:
        raise FeatstoreError(f"head {name!r} is incomplete in this store (missing array {exc})") from None


def _record(row) -> dict:
    return {"name": row[0], "kind": row[1], "task": row[2], "set_id": row[3], "classes": json.loads(row[4]),
            "params": json.loads(row[5]), "metrics": json.loads(row[6]), "created_at": str(row[7])}
