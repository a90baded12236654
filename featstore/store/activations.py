"""Cut activations in the store: per content hash and view, the backbone's activation at a named cut point,
fp16, as one BLOB per (hash, view) in a table of the store's own DuckDB file (DuckDB has no float16 type).

An activation set is keyed by its pooled embedding set (backbone, preprocessing, precision, provider), the cut,
the activation's shape, the number of views and the augmentation (seed and parameters) and the bottom graph's
bytes: a new --cut or --views starts a new set, a re-run with the same ones fills in what is missing. The sets live
in their own registry (activation_sets), never among the embedding sets, so search, heads, indexes and gc never
take one for a set of pooled vectors.

Text sets store each item's real tokens only (`tokens` rows of D values); reads pad them to the set's shape
(max_tokens, D) and give the attention mask.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store.db import Store
from featstore.store.schema import SCHEMA

ACT_FORMAT = 1


@dataclass(frozen=True)
class ActivationSet:
    act_id: str
    set_id: str
    model: str
    cut: str
    shape: tuple
    views: int
    augment: dict
    table: str
    onnx_path: str = ""
    onnx_sha256: str = ""

    @property
    def is_text(self) -> bool:
        return len(self.shape) == 2 and self.augment.get("modality") == "text"

    @property
    def item_bytes(self) -> int:
        """fp16 bytes of one view at the full shape (text: at the token limit; stored rows hold real tokens)."""
        return int(np.prod(self.shape)) * 2


def activation_set_for(set_id: str, model: str, cut: str, shape: tuple, views: int, augment: dict,
                       onnx_path: str, onnx_sha256: str) -> ActivationSet:
    key = json.dumps({"set_id": set_id, "cut": cut, "shape": list(shape), "views": views, "augment": augment,
                      "onnx_sha256": onnx_sha256, "format": ACT_FORMAT}, sort_keys=True)
    act_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    return ActivationSet(act_id, set_id, model, cut, tuple(shape), int(views), augment, f"act_{act_id}",
                         onnx_path, onnx_sha256)


def ensure_activation_set(store: Store, a: ActivationSet) -> None:
    store._require_write()
    store.con.execute(SCHEMA)              # idempotent: a store made before this table existed gets it here
    if any(s.act_id == a.act_id for s in activation_sets(store)):
        return
    with store.transaction():
        store.con.execute(f"CREATE TABLE {a.table} (hash VARCHAR NOT NULL, view SMALLINT NOT NULL, "
                          "tokens INTEGER, params JSON, data BLOB NOT NULL, PRIMARY KEY (hash, view))")
        store.con.execute("INSERT INTO activation_sets (act_id, set_id, model, cut, shape, views, augment, "
                          "table_name, onnx_path, onnx_sha256, dtype) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          [a.act_id, a.set_id, a.model, a.cut, json.dumps(list(a.shape)), a.views,
                           json.dumps(a.augment), a.table, a.onnx_path, a.onnx_sha256, "float16"])


def activation_sets(store: Store) -> list[ActivationSet]:
    """The store's activation sets, oldest first ([] in a store without any)."""
    rel = store.relation("activation_sets")
    rows = store.con.execute(f"SELECT act_id, set_id, model, cut, shape, views, augment, table_name, onnx_path, "
                             f"onnx_sha256 FROM {rel} ORDER BY created_at").fetchall()
    return [ActivationSet(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), int(r[5]), json.loads(r[6]), r[7],
                          r[8], r[9]) for r in rows]


def find_activation_set(store: Store, model_or_set_id: str | None, cut: str | None) -> ActivationSet:
    """The newest activation set matching a model name (or pooled set id, or act_id) and a cut; one line naming
    the command that makes it when there is none."""
    sets = [a for a in activation_sets(store)
            if model_or_set_id in (None, a.model, a.set_id, a.act_id) and cut in (None, a.cut)]
    if sets:
        return sets[-1]
    at = f"at cut {cut!r} " if cut else ""
    of = f"for {model_or_set_id} " if model_or_set_id else ""
    raise FeatstoreError(f"no activations {at}{of}in this store: run `featstore embed SOURCE --cut "
                         f"{cut or 'NAME'}` first (`featstore models cuts MODEL` lists the cut points)")


def stored_hashes(store: Store, a: ActivationSet) -> set[str]:
    """The contents whose every view is stored."""
    return {r[0] for r in store.con.execute(
        f"SELECT hash FROM {a.table} GROUP BY hash HAVING count(*) = ?", [a.views]).fetchall()}


def write_activations(store: Store, a: ActivationSet, hashes: list[str], x: np.ndarray,
                      tokens: list[int] | None = None, params: list[list[dict | None]] | None = None) -> None:
    """One transaction: x (n, V, *shape) as fp16 BLOBs per (hash, view); text: only each item's first tokens[i]
    rows; params[i][v]: view v's augmentation parameters (None for view 0)."""
    import pyarrow as pa

    x = np.asarray(x, dtype=np.float16)
    n, views = x.shape[:2]
    if views != a.views:
        raise ValueError(f"{views} views given, the set holds {a.views}")
    cols = {"hash": [], "view": [], "tokens": [], "params": [], "data": []}
    for i, h in enumerate(hashes):
        for v in range(views):
            arr = x[i, v] if tokens is None else x[i, v, :tokens[i]]
            cols["hash"].append(h)
            cols["view"].append(v)
            cols["tokens"].append(None if tokens is None else int(tokens[i]))
            p = params[i][v] if params else None
            cols["params"].append(None if p is None else json.dumps(p))
            cols["data"].append(np.ascontiguousarray(arr).tobytes())
    table = pa.table({"hash": pa.array(cols["hash"], pa.string()), "view": pa.array(cols["view"], pa.int16()),
                      "tokens": pa.array(cols["tokens"], pa.int32()), "params": pa.array(cols["params"], pa.string()),
                      "data": pa.array(cols["data"], pa.binary())})
    with store.transaction():
        store.con.register("_new_acts", table)
        try:
            store.con.execute(f"INSERT INTO {a.table} SELECT hash, view, tokens, params::JSON, data FROM _new_acts "
                              "ON CONFLICT DO NOTHING")
        finally:
            store.con.unregister("_new_acts")


def read_activations(store: Store, a: ActivationSet, hashes: list[str], views: bool = True) -> dict:
    """{"x": float16 (n, V, *shape) (V = a.views, or 1 with views=False), "mask": uint8 (n, T) for text else None,
    "hashes": the hashes in the order given}; hashes the set lacks -> one line saying how many."""
    hashes = list(hashes)
    nv = a.views if views else 1
    rows = store.con.execute(
        f"SELECT hash, view, tokens, data FROM {a.table} WHERE view < ? AND hash IN (SELECT unnest($2::VARCHAR[]))",
        [nv, hashes]).fetchall()
    pos = {h: i for i, h in enumerate(hashes)}
    x = np.zeros((len(hashes), nv) + tuple(a.shape), np.float16)
    mask = np.zeros((len(hashes), a.shape[0]), np.uint8) if a.is_text else None
    seen = np.zeros((len(hashes), nv), bool)
    for h, v, tokens, data in rows:
        i = pos[h]
        arr = np.frombuffer(data, np.float16)
        if tokens is None:
            x[i, v] = arr.reshape(a.shape)
        else:
            x[i, v, :tokens] = arr.reshape(tokens, a.shape[1])
            mask[i, :tokens] = 1
        seen[i, v] = True
    missing = int((~seen.all(axis=1)).sum())
    if missing:
        raise FeatstoreError(f"{missing} of {len(hashes)} contents have no activations at cut {a.cut!r} for "
                             f"{a.model} in this store: run `featstore embed SOURCE --cut {a.cut}` over them")
    return {"x": x, "mask": mask, "hashes": hashes}


def view_params(store: Store, a: ActivationSet, hashes: list[str]) -> dict[str, list[dict | None]]:
    """hash -> the augmentation parameters of each view (None for view 0), as recorded when they were made."""
    rows = store.con.execute(f"SELECT hash, view, params FROM {a.table} WHERE hash IN "
                             "(SELECT unnest($1::VARCHAR[])) ORDER BY hash, view", [list(hashes)]).fetchall()
    out: dict[str, list] = {}
    for h, v, p in rows:
        out.setdefault(h, [None] * a.views)[v] = json.loads(p) if p else None
    return out


def activation_stats(store: Store) -> list[dict]:
    """Per activation set: model, cut, shape, views, items, stored bytes (fp16 payload) and bytes per item."""
    out = []
    for a in activation_sets(store):
        items, views, size = store.con.execute(
            f"SELECT count(DISTINCT hash), count(*), coalesce(sum(octet_length(data)), 0) FROM {a.table}").fetchone()
        out.append({"act_id": a.act_id, "set_id": a.set_id, "model": a.model, "cut": a.cut, "shape": list(a.shape),
                    "views": a.views, "items": items, "stored_views": views, "bytes": int(size),
                    "bytes_per_item": int(size / items) if items else 0, "dtype": "float16",
                    "augment": a.augment})
    return out


def collect_activations(store: Store, dropped_set_ids: list[str], kept_hashes_sql: str, dry_run: bool) -> dict:
    """gc: activation sets whose pooled set is dropped go with it; in the others, the activations of contents no
    kept item holds (`kept_hashes_sql`) are deleted."""
    sets = activation_sets(store)
    gone = [a for a in sets if a.set_id in dropped_set_ids]
    stale = {a.act_id: store.con.execute(f"SELECT count(*) FROM {a.table} WHERE hash NOT IN {kept_hashes_sql}")
             .fetchone()[0] for a in sets if a not in gone}
    report = {"removed_activation_sets": [{"act_id": a.act_id, "model": a.model, "cut": a.cut} for a in gone],
              "removed_activations": {k: n for k, n in stale.items() if n}}
    if dry_run or not (gone or any(stale.values())):
        return report
    with store.transaction():
        for a in gone:
            store.con.execute(f"DROP TABLE {a.table}")
            store.con.execute("DELETE FROM activation_sets WHERE act_id = ?", [a.act_id])
        for a in sets:
            if stale.get(a.act_id):
                store.con.execute(f"DELETE FROM {a.table} WHERE hash NOT IN {kept_hashes_sql}")
    return report


def verify_activations(store: Store, chunk: int = 2000) -> list[dict]:
    """`featstore verify`: per activation set, contents missing some of their views, records whose size does not
    match the set's shape, and records holding a non-finite value (read a chunk at a time)."""
    out = []
    for a in activation_sets(store):
        width = int(np.prod(a.shape[1:])) if a.is_text else int(np.prod(a.shape))
        items, incomplete = store.con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE n <> ?) FROM (SELECT hash, count(*) AS n FROM {a.table} "
            "GROUP BY hash)", [a.views]).fetchone()
        bad_size = store.con.execute(
            f"SELECT count(*) FROM {a.table} WHERE octet_length(data) <> 2 * ? * coalesce(tokens, 1)",
            [width]).fetchone()[0]
        non_finite, offset = 0, 0
        while True:
            rows = store.con.execute(f"SELECT data FROM {a.table} ORDER BY hash, view LIMIT ? OFFSET ?",
                                     [chunk, offset]).fetchall()
            if not rows:
                break
            non_finite += sum(not np.isfinite(np.frombuffer(r[0], np.float16)).all() for r in rows)
            offset += chunk
        out.append({"act_id": a.act_id, "model": a.model, "cut": a.cut, "items": items, "incomplete": incomplete,
                    "bad_size": bad_size, "non_finite": int(non_finite)})
    return out
