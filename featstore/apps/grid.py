"""The web app's gallery: which stored items a view shows, a page at a time, with counts per filter value.

A view is a set of filters (label, split, status, a head's prediction, correct/wrong, a confidence range, an audit
finding, a near-duplicate group, a tag, the user's metadata columns, a region of the 2-D map, and the guarded SQL
condition `where`). Every value is parsed against a list and compared in memory: no value is ever written into
SQL; the free `where` goes through the filter guard (store/where_guard.py) and runs on the filter connection.

The per-item columns (labels, splits, tags, exclusions, audit findings, metadata) are read once per store snapshot
(`memo`, the snapshot's own cache) and each stored head's prediction and probability for every item once per head
and set of stored items (one matrix product per chunk of vectors for a linear head), so that a page or a count is a
few numpy operations over at most a few hundred thousand rows.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store import edits
from featstore.store.db import Store
from featstore.store.where_guard import MAX_LENGTH, check_where

MAX_PAGE = 500
MAX_VALUES = 200               # values of one multi-valued filter
MAX_REGION = 200               # vertices of a map region
FACET_VALUES = 60              # counts listed per filter (the most frequent)
META_FACET_MAX = 60            # a text/boolean metadata column with at most this many values gets counts
STATUSES = ("labelled", "unlabelled", "excluded", "included")
FINDINGS = ("label_issue", "outlier", "near_duplicate", "leakage", "none")
SORTS = ("item_id", "conf", "-conf")
LIST_KEYS = ("label", "split", "status", "pred", "finding", "tag", "dup_group")
ONE_KEYS = ("task", "head", "correct", "conf_min", "conf_max", "where", "region", "region_set", "region_method",
            "offset", "limit", "sort")
_lock = threading.Lock()
_head_cache: OrderedDict = OrderedDict()      # (root, head, created_at, what is stored) -> predictions
_predicting = threading.Lock()
HEAD_CACHE = 32


@dataclass
class View:
    """A parsed view: every filter the grid applies."""

    task: str | None = None
    lists: dict = field(default_factory=dict)        # key -> list of values (label, split, status, pred, ...)
    meta: dict = field(default_factory=dict)         # metadata column -> list of values (as text)
    head: str | None = None
    correct: str | None = None
    conf_min: float | None = None
    conf_max: float | None = None
    where: object = None                              # a checked ItemFilter
    region: list | None = None                        # [(x, y), ...] in the map's [0, 1] square
    region_set: str | None = None
    region_method: str = "tsne"
    offset: int = 0
    limit: int = 100
    sort: str = "item_id"


def parse_view(pairs: list[tuple[str, str]], meta_columns: dict, tasks: list[str], heads: list[str]) -> View:
    """A view from query parameters (key, value) pairs; any unknown key or unparsable value raises FeatstoreError
    naming it. Metadata filters are `m.COLUMN=value` for a column the store has."""
    v = View()
    seen_one = set()
    for key, value in pairs:
        if len(value) > MAX_LENGTH * 4:
            raise FeatstoreError(f"{key}: value too long")
        if key in LIST_KEYS or (key.startswith("m.") and key[2:] in meta_columns):
            target = v.meta.setdefault(key[2:], []) if key.startswith("m.") else v.lists.setdefault(key, [])
            if len(target) >= MAX_VALUES:
                raise FeatstoreError(f"{key}: at most {MAX_VALUES} values")
            target.append(value)
        elif key in ONE_KEYS:
            if key in seen_one:
                raise FeatstoreError(f"{key}: give it once")
            seen_one.add(key)
            _set_one(v, key, value, tasks, heads)
        elif key.startswith("m."):
            raise FeatstoreError(f"{key}: no metadata column {key[2:]!r} in this store"
                                 + (f" (columns: {', '.join(meta_columns)})" if meta_columns else ""))
        else:
            raise FeatstoreError(f"unknown filter {key[:40]!r}; filters: {', '.join(LIST_KEYS + ONE_KEYS)}, m.COLUMN")
    for s in v.lists.get("status", []):
        if s not in STATUSES:
            raise FeatstoreError(f"status: one of {', '.join(STATUSES)} (got {s[:40]!r})")
    for f in v.lists.get("finding", []):
        if f not in FINDINGS:
            raise FeatstoreError(f"finding: one of {', '.join(FINDINGS)} (got {f[:40]!r})")
    for g in v.lists.get("dup_group", []):
        if not g.isdigit():
            raise FeatstoreError(f"dup_group: a group number (got {g[:40]!r})")
    if (v.lists.get("pred") or v.correct or v.conf_min is not None or v.conf_max is not None
            or v.sort != "item_id") and not v.head:
        raise FeatstoreError("pred, correct, conf_min, conf_max and sort by confidence need a head: give 'head'")
    if v.region is not None and not v.region_set:
        raise FeatstoreError("region: give the map's embedding set as 'region_set'")
    return v


def _set_one(v: View, key: str, value: str, tasks: list[str], heads: list[str]) -> None:
    if key == "task":
        if value and value not in tasks:
            raise FeatstoreError(f"task: no task {value[:60]!r} in this store"
                                 + (f" (tasks: {', '.join(tasks)})" if tasks else ""))
        v.task = value or None
    elif key == "head":
        if value and value not in heads:
            raise FeatstoreError(f"head: no head {value[:60]!r} in this store"
                                 + (f" (heads: {', '.join(heads)})" if heads else ""))
        v.head = value or None
    elif key == "correct":
        if value not in ("correct", "wrong", ""):
            raise FeatstoreError("correct: 'correct' or 'wrong'")
        v.correct = value or None
    elif key in ("conf_min", "conf_max"):
        try:
            x = float(value)
        except ValueError:
            raise FeatstoreError(f"{key}: a number between 0 and 1 (got {value[:40]!r})") from None
        if not 0.0 <= x <= 1.0:
            raise FeatstoreError(f"{key}: a number between 0 and 1 (got {value[:40]!r})")
        setattr(v, key, x)
    elif key == "where":
        v.where = value.strip() or None
    elif key == "region":
        v.region = parse_region(value)
    elif key == "region_set":
        v.region_set = value[:200] or None
    elif key == "region_method":
        if value not in ("tsne", "pca"):
            raise FeatstoreError("region_method: 'tsne' or 'pca'")
        v.region_method = value
    elif key in ("offset", "limit"):
        if not value.isdigit():
            raise FeatstoreError(f"{key}: expected a whole number, got {value[:40]!r}")
        x = int(value)
        if key == "limit" and not 1 <= x <= MAX_PAGE:
            raise FeatstoreError(f"limit: 1 to {MAX_PAGE}")
        setattr(v, key, x)
    elif key == "sort":
        if value not in SORTS:
            raise FeatstoreError(f"sort: one of {', '.join(SORTS)}")
        v.sort = value


def parse_region(text: str) -> list[tuple[float, float]]:
    """'x,y;x,y;...' (3 to MAX_REGION vertices, each coordinate a number) -> a polygon."""
    try:
        points = [tuple(float(c) for c in p.split(",")) for p in text.split(";") if p.strip()]
    except ValueError:
        raise FeatstoreError("region: 'x,y;x,y;...' with numbers") from None
    if not 3 <= len(points) <= MAX_REGION or any(len(p) != 2 or not all(np.isfinite(p)) for p in points):
        raise FeatstoreError(f"region: 3 to {MAX_REGION} points 'x,y' separated by ';'")
    return points


def inside(xy: np.ndarray, polygon: list[tuple[float, float]]) -> np.ndarray:
    """Which rows of xy (n, 2) lie inside the polygon (even-odd rule), vectorised over the points."""
    x, y = xy[:, 0], xy[:, 1]
    out = np.zeros(len(xy), bool)
    px = np.array([p[0] for p in polygon])
    py = np.array([p[1] for p in polygon])
    for i in range(len(polygon)):
        x1, y1, x2, y2 = px[i], py[i], px[i - 1], py[i - 1]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (x2 - x1) * (y - y1) / (y2 - y1) + x1
        out ^= crosses & (x < at)
    return out


# ---- the per-snapshot columns --------------------------------------------------------------------------------
class Column:
    """Values of one column for every row as integer codes into `names` (-1: none)."""

    def __init__(self, values, n: int):
        values = nullable(values) if values is not None else [None] * n
        self.names: list[str] = sorted({str(x) for x in values if x is not None})
        index = {name: i for i, name in enumerate(self.names)}
        self.codes = np.fromiter((index[str(x)] if x is not None else -1 for x in values), np.int32, len(values))

    @classmethod
    def of(cls, names: list[str], codes: np.ndarray) -> "Column":
        """A column from its names and codes as they are."""
        col = cls(None, 0)
        col.names, col.codes = list(names), codes
        return col

    def value(self, row: int):
        c = self.codes[row]
        return self.names[c] if c >= 0 else None

    def mask(self, wanted: list[str]) -> np.ndarray:
        codes = [self.names.index(w) for w in wanted if w in self.names]
        m = np.isin(self.codes, codes)
        if "(none)" in wanted:
            m |= self.codes < 0
        return m

    def counts(self, mask: np.ndarray) -> dict:
        got = np.bincount(self.codes[mask] + 1, minlength=len(self.names) + 1)
        out = {name: int(got[i + 1]) for i, name in enumerate(self.names) if got[i + 1]}
        if got[0]:
            out["(none)"] = int(got[0])
        return _top(out)


def nullable(values) -> list:
    """A column DuckDB fetched (a masked array where it holds NULLs) as a list with None for NULL."""
    arr = np.ma.asarray(values)
    data = np.asarray(arr.data, dtype=object)
    data[np.ma.getmaskarray(arr)] = None
    return data.tolist()


def _top(counts: dict) -> dict:
    if len(counts) <= FACET_VALUES:
        return counts
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:FACET_VALUES])


@dataclass
class Base:
    """The ok items of a snapshot in item_id order."""

    ids: np.ndarray
    paths: np.ndarray
    hashes: np.ndarray
    row_of_path: dict
    rows_of_hash: dict


@dataclass
class TaskColumns:
    label: Column
    split: Column


def _once(memo: dict, key, build):
    """memo[key], built once (a lock keeps two requests from building it twice)."""
    got = memo.get(key)
    if got is not None:
        return got
    with _lock:
        if key not in memo:
            memo[key] = build()
        return memo[key]


def base(store: Store, memo: dict) -> Base:
    def build():
        r = store.con.execute("SELECT item_id, path, hash FROM items WHERE status = 'ok' ORDER BY item_id").fetchnumpy()
        ids = np.asarray(r["item_id"], np.int64)
        paths = np.asarray(np.ma.filled(r["path"], ""), dtype=object)
        hashes = np.asarray(np.ma.filled(r["hash"], ""), dtype=object)
        rows_of_hash: dict = {}
        for i, h in enumerate(hashes):
            rows_of_hash.setdefault(h, []).append(i)
        return Base(ids, paths, hashes, {p: i for i, p in enumerate(paths)}, rows_of_hash)

    return _once(memo, ("grid", "base"), build)


def task_columns(store: Store, memo: dict, task: str | None) -> TaskColumns:
    def build():
        b = base(store, memo)
        n = len(b.ids)
        if task is None:
            return TaskColumns(Column(None, n), Column(None, n))
        r = store.con.execute(
            f"""SELECT l.label, sp.split FROM items i LEFT JOIN labels l ON l.path = i.path AND l.task = $task
                LEFT JOIN {store.relation("splits")} sp ON sp.hash = i.hash AND sp.task = $task
                WHERE i.status = 'ok' ORDER BY i.item_id""", {"task": task}).fetchnumpy()
        return TaskColumns(Column(r["label"], n), Column(r["split"], n))

    return _once(memo, ("grid", "task", task), build)


@dataclass
class Curation:
    """What the curation tables say per row: exclusions, tags, audit findings (of one task)."""

    excluded: Column
    tags: dict                      # tag -> bool mask
    finding_masks: dict             # kind -> bool mask
    suggested: dict                 # row -> suggested label
    reasons: dict                   # row -> [finding dicts]
    dup_group: np.ndarray           # int32, -1 none


def curation(store: Store, memo: dict, task: str | None) -> Curation:
    def build():
        b = base(store, memo)
        n = len(b.ids)
        excluded = [None] * n
        tags: dict = {}
        for path, why in edits.excluded_paths(store).items():
            if path in b.row_of_path:
                excluded[b.row_of_path[path]] = why or "excluded"
        for path, names in edits.tags_of(store, list(b.paths)).items():
            row = b.row_of_path.get(path)
            for t in names if row is not None else ():
                tags.setdefault(t, np.zeros(n, bool))[row] = True
        findings = edits.audit_findings(store, task) if task else []
        masks = {k: np.zeros(n, bool) for k in FINDINGS if k != "none"}
        suggested, reasons = {}, {}
        group = np.full(n, -1, np.int32)
        for f in findings:
            row = b.row_of_path.get(f.get("path"))
            if row is None:
                continue
            kind = f.get("kind")
            if kind in masks:
                masks[kind][row] = True
            reasons.setdefault(row, []).append(f)
            if f.get("suggested") is not None and kind == "label_issue":
                suggested[row] = str(f["suggested"])
            if f.get("group") is not None and str(f["group"]).lstrip("-").isdigit():
                group[row] = int(f["group"])
        return Curation(Column(excluded, n), tags, masks, suggested, reasons, group)

    return _once(memo, ("grid", "curation", task), build)


def meta_columns(store: Store, memo: dict) -> dict:
    """column -> Column (text and boolean columns with few values; counted and filtered by value) or a numpy
    array (other types: filtered through `where` only, not counted)."""
    def build():
        cols = store.metadata_columns()
        if not cols:
            return {}
        b = base(store, memo)
        n = len(b.ids)
        from featstore.store.metadata import quote
        out = {}
        r = store.con.execute(
            "SELECT " + ", ".join(f"m.{quote(c)}" for c in cols)
            + " FROM items i LEFT JOIN item_meta m ON m.path = i.path WHERE i.status = 'ok' ORDER BY i.item_id"
        ).fetchnumpy()
        for c in cols:
            values = nullable(r[c])
            distinct = {x for x in values[: 50_000] if x is not None}
            if len(distinct) <= META_FACET_MAX:
                out[c] = Column(values, n)
        return out

    return _once(memo, ("grid", "meta"), build)


# ---- head predictions ----------------------------------------------------------------------------------------
@dataclass
class Predictions:
    head: str
    task: str
    task_type: str
    classes: list
    pred: np.ndarray               # int32 class code per row (-1: the head's set lacks the item); regression: -1
    prob: np.ndarray               # float32 probability of the predicted class (regression: the value); nan: none


def predictions(store: Store, memo: dict, root, head_name: str) -> Predictions:
    """Every ok item's prediction by a stored head, computed once per head and set of stored items (an edit of
labels, tags or exclusions does not recompute it)."""
    from featstore.heads.storage import head_records

    records = {r["name"]: r for r in _once(memo, ("grid", "head_records"), lambda: head_records(store))}
    if head_name not in records:
        raise FeatstoreError(f"head: no head {head_name!r} in this store")
    record = records[head_name]
    b = base(store, memo)
    s = store.get_set(record["set_id"])          # label edits leave predictions as they are: keyed by the vectors
    key = (str(root), head_name, record["created_at"], store.live_count(s) if s is not None else 0,
           len(b.ids), int(b.ids[-1]) if len(b.ids) else 0, int(b.ids.sum()))
    with _predicting:            # one computation at a time: a second request for the same head waits, not redoes
        with _lock:
            got = _head_cache.get(key)
            if got is not None:
                _head_cache.move_to_end(key)
                return got
        got = _predict_all(store, b, head_name)
        with _lock:
            _head_cache[key] = got
            while len(_head_cache) > HEAD_CACHE:
                _head_cache.popitem(last=False)
    return got


def warm(store: Store, memo: dict, root) -> None:
    """Compute every stored head's predictions now (a server does this in the background when it starts, so
    that the first gallery page of a large store does not wait for them)."""
    from featstore.heads.storage import head_records

    for record in _once(memo, ("grid", "head_records"), lambda: head_records(store)):
        predictions(store, memo, root, record["name"])


def _predict_all(store: Store, b: Base, head_name: str) -> Predictions:
    from featstore.heads.storage import load_head
    from featstore.heads.stored_run import chunk_for, outputs_for

    head, record = load_head(store, head_name)
    n = len(b.ids)
    pred = np.full(n, -1, np.int32)
    prob = np.full(n, np.nan, np.float32)
    s = store.get_set(record["set_id"])
    if s is not None:
        hash_of = dict(store.con.execute(f"SELECT vec_id, hash FROM {s.table}").fetchall())
        for vec_ids, vectors in store.iter_live_vectors(s, chunk=chunk_for(record)):
            hashes = [hash_of.get(int(v)) for v in vec_ids]
            out = outputs_for(store, head, record, hashes, vectors)
            rows = [b.rows_of_hash.get(h, ()) for h in hashes]
            if head.task_type == "classification":
                p, q = out.argmax(axis=1).astype(np.int32), out.max(axis=1)
            else:
                p, q = np.full(len(out), -1, np.int32), out[:, 0]
            for j, rs in enumerate(rows):
                for r in rs:
                    pred[r], prob[r] = p[j], q[j]
    return Predictions(head_name, record["task"], head.task_type, list(head.outputs), pred, prob)


# ---- the view ------------------------------------------------------------------------------------------------
def _masks(store: Store, memo: dict, root, view: View, region_of) -> tuple[dict, dict]:
    """(filter name -> bool mask, the columns the counts read) for the view."""
    b = base(store, memo)
    n = len(b.ids)
    tc = task_columns(store, memo, view.task)
    cur = curation(store, memo, view.task)
    masks: dict = {}
    cols: dict = {"label": tc.label, "split": tc.split}
    L = view.lists
    if "label" in L:
        masks["label"] = tc.label.mask(L["label"])
    if "split" in L:
        masks["split"] = tc.split.mask(L["split"])
    status = _status_masks(tc, cur, n)
    if "status" in L:
        masks["status"] = np.logical_or.reduce([status[s] for s in L["status"]])
    cols["status"] = status
    findings = dict(cur.finding_masks)
    findings["none"] = ~np.logical_or.reduce(list(cur.finding_masks.values()))
    cols["finding"] = findings
    if "finding" in L:
        masks["finding"] = np.logical_or.reduce([findings[f] for f in L["finding"]])
    cols["tag"] = cur.tags
    if "tag" in L:
        m = np.zeros(n, bool)
        for t in L["tag"]:
            if t in cur.tags:
                m |= cur.tags[t]
        masks["tag"] = m
    if "dup_group" in L:
        masks["dup_group"] = np.isin(cur.dup_group, [int(g) for g in L["dup_group"]])
    if view.head:
        p = predictions(store, memo, root, view.head)
        if p.task_type == "classification":
            pc = Column.of(p.classes, p.pred)
            cols["pred"] = pc
            if "pred" in L:
                masks["pred"] = pc.mask(L["pred"])
            truth = task_columns(store, memo, p.task).label
            names = np.array(list(p.classes) + [None], dtype=object)
            known = (truth.codes >= 0) & (p.pred >= 0)
            same = np.zeros(n, bool)
            if known.any():
                truth_names = np.array(truth.names, dtype=object)
                same[known] = names[p.pred[known]] == truth_names[truth.codes[known]]
            cols["correct"] = {"correct": known & same, "wrong": known & ~same}
            if view.correct:
                masks["correct"] = cols["correct"][view.correct]
        if view.conf_min is not None:
            masks["conf_min"] = p.prob >= view.conf_min
        if view.conf_max is not None:
            masks["conf_max"] = p.prob <= view.conf_max
    for c, wanted in view.meta.items():
        col = meta_columns(store, memo).get(c)
        if col is None:
            raise FeatstoreError(f"m.{c}: this column has too many values to filter by value; use 'where'")
        masks[f"m.{c}"] = col.mask(wanted)
    for c, col in meta_columns(store, memo).items():
        cols[f"m.{c}"] = col
    if view.where:
        masks["where"] = _where_mask(store, memo, view, b)
    if view.region is not None:
        item_ids, xy = region_of(view.region_set, view.region_method)
        chosen = np.asarray(item_ids)[inside(np.asarray(xy), view.region)]
        masks["region"] = np.isin(b.ids, chosen)
    return masks, cols


def _status_masks(tc: TaskColumns, cur: Curation, n: int) -> dict:
    excluded = cur.excluded.codes >= 0
    labelled = tc.label.codes >= 0
    return {"labelled": labelled, "unlabelled": ~labelled, "excluded": excluded, "included": ~excluded}


def _where_mask(store: Store, memo: dict, view: View, b: Base) -> np.ndarray:
    where = check_where(view.where, store.metadata_columns())
    recent = memo.setdefault(("grid", "where"), OrderedDict())
    key = (view.task, where.sql)
    if key in recent:
        return recent[key]
    ids = store.passing_rows(where, view.task, "SELECT item_id FROM {items}",
                             fetch=lambda cur: cur.fetchnumpy()["item_id"])
    mask = np.isin(b.ids, np.asarray(ids, np.int64))
    with _lock:
        recent[key] = mask
        while len(recent) > 16:
            recent.popitem(last=False)
    return mask


def _combine(masks: dict, n: int, leave_out: tuple = ()) -> np.ndarray:
    out = np.ones(n, bool)
    for name, m in masks.items():
        if name not in leave_out:
            out &= m
    return out


def _counts(masks: dict, cols: dict, n: int) -> dict:
    """Per filter, how many items each value would give with every other filter kept."""
    out = {}
    for name, col in cols.items():
        others = _combine(masks, n, leave_out=(name,))
        if isinstance(col, Column):
            out[name] = col.counts(others)
        else:
            out[name] = _top({k: int(np.count_nonzero(m & others)) for k, m in col.items()
                              if np.count_nonzero(m & others)})
    return out


def matching_rows(store: Store, memo: dict, root, view: View, region_of) -> tuple[np.ndarray, dict, dict]:
    """(the rows passing the view in its order, the masks, the columns)."""
    b = base(store, memo)
    masks, cols = _masks(store, memo, root, view, region_of)
    rows = np.flatnonzero(_combine(masks, len(b.ids)))
    if view.sort != "item_id":
        prob = predictions(store, memo, root, view.head).prob[rows]
        key = np.nan_to_num(prob, nan=2.0) if view.sort == "conf" else -np.nan_to_num(prob, nan=-1.0)
        rows = rows[_order(key, view.offset + view.limit)]
    return rows, masks, cols


def _order(key: np.ndarray, first: int) -> np.ndarray:
    """Indices that sort `key`, exact for the first `first` positions (and every position when all are needed):
    a page near the top needs a partition and a short sort, not a sort of every row."""
    if first >= len(key) // 4:
        return np.argsort(key, kind="stable")
    head = np.argpartition(key, first)[:first]
    head = head[np.lexsort((head, key[head]))]
    rest = np.setdiff1d(np.arange(len(key)), head, assume_unique=True)
    return np.concatenate([head, rest])


def grid_page(store: Store, memo: dict, root, view: View, region_of=None, counts: bool = True) -> dict:
    """{"total", "offset", "limit", "items": [...], "counts": {...}, "heads": [...]} for the view."""
    from featstore.heads.storage import head_records

    b = base(store, memo)
    rows, masks, cols = matching_rows(store, memo, root, view, region_of)
    page = rows[view.offset:view.offset + view.limit]
    heads = [r for r in _once(memo, ("grid", "head_records"), lambda: head_records(store))]
    preds = [predictions(store, memo, root, r["name"]) for r in heads]
    tc = task_columns(store, memo, view.task)
    cur = curation(store, memo, view.task)
    texts = _texts(store, memo, [b.hashes[r] for r in page])
    items = []
    for r in page.tolist():
        item = {"item_id": int(b.ids[r]), "path": b.paths[r], "label": tc.label.value(r),
                "split": tc.split.value(r), "excluded": cur.excluded.value(r),
                "tags": sorted(t for t, m in cur.tags.items() if m[r]),
                "findings": sorted({f.get("kind") for f in cur.reasons.get(r, [])}),
                "suggested": cur.suggested.get(r), "preds": {}}
        if cur.dup_group[r] >= 0:
            item["dup_group"] = int(cur.dup_group[r])
        for p in preds:
            if not np.isnan(p.prob[r]):
                item["preds"][p.head] = [p.classes[p.pred[r]] if p.pred[r] >= 0 else None,
                                         round(float(p.prob[r]), 4)]
        text = texts.get(b.hashes[r])
        if text is not None:
            item["text"] = text[:300]
        items.append(item)
    out = {"task": view.task, "total": int(len(rows)), "offset": view.offset, "limit": view.limit,
           "items": items, "heads": [{"name": r["name"], "task": r["task"], "kind": r["kind"]} for r in heads]}
    if counts:
        out["counts"] = _counts(masks, cols, len(b.ids))
    return out


def grid_ids(store: Store, memo: dict, root, view: View, region_of=None, cap: int = 100_000) -> list[int]:
    """Every item id the view matches (at most `cap`), in the grid's order."""
    rows, _, _ = matching_rows(store, memo, root, view, region_of)
    if len(rows) > cap:
        raise FeatstoreError(f"{len(rows):,} items match; select at most {cap:,} at once (narrow the filter)")
    return base(store, memo).ids[rows].tolist()


def _texts(store: Store, memo: dict, hashes: list[str]) -> dict:
    has = _once(memo, ("grid", "has_texts"), lambda: bool(store.con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {store.relation('texts')} LIMIT 1)").fetchone()[0]))
    if not hashes or not has:
        return {}
    return dict(store.con.execute(f"SELECT hash, text FROM {store.relation('texts')} "
                                  "WHERE hash IN (SELECT unnest($1::VARCHAR[]))", [hashes]).fetchall())
