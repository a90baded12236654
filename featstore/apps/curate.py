"""Curation: act on what audits, predictions and duplicates find. Set or remove a task's label on chosen items,
accept an audit's suggested labels (all, or some), add or remove a tag, exclude items from fitting and evaluation
(as duplicates, outliers, or for a reason of one's own) or include them again, and undo any of it.

Items are chosen by id, by path or by a `--where` condition. Every write is one edit in the store's edit log
(store/edits.py: who, when, every value before and after), so each can be undone exactly.
"""
from __future__ import annotations

import re
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.store import edits
from featstore.store.db import Store
from featstore.store.metadata import match_path
from featstore.user_csv import read_user_csv

MAX_NAME = 200                                   # characters of a label, tag, task or reason
TAG = re.compile(r"[^\W_][\w .:/+-]{0,199}")     # a tag: a letter or digit, then letters, digits, _ . : / + - space


def who_default() -> str:
    """The user name edits are recorded under: the operating system's."""
    return edits.os_user()


# ---- checking what a user sends ---------------------------------------------------------------------------------
def check_text(value, what: str) -> str:
    """A label, task or reason: text of 1..MAX_NAME characters without control characters."""
    if not isinstance(value, str) or not value.strip():
        raise FeatstoreError(f"{what}: give a non-empty text")
    if len(value) > MAX_NAME:
        raise FeatstoreError(f"{what}: longer than {MAX_NAME} characters")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise FeatstoreError(f"{what}: holds a control character")
    return value


def check_tag(tag) -> str:
    if not isinstance(tag, str) or not TAG.fullmatch(tag) or tag != tag.strip():
        raise FeatstoreError(f"tag {str(tag)[:40]!r}: 1-{MAX_NAME} characters: letters, digits and _ . : / + - "
                             "or inner spaces, starting with a letter or digit")
    return tag


# ---- choosing items ---------------------------------------------------------------------------------------------
def parse_ids(ids) -> list[int]:
    """Item ids from a list of ints or text like '3,17,42'."""
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    if isinstance(ids, str):
        ids = [v for v in ids.split(",") if v.strip()]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise FeatstoreError(f"ids: expected item ids like 3,17,42, got {str(ids)[:60]!r}") from None


def paths_of(store: Store, ids=None, paths=None) -> list[str]:
    """The stored paths of items named by id or by path (a stored path, or a file path resolved as `label --csv`
    does: against the current directory); one error naming those not in the store."""
    ids, paths = parse_ids(ids), list(paths or [])
    found: dict[str, None] = {}
    if ids:
        rows = dict(store.con.execute("SELECT item_id, path FROM items WHERE item_id IN (SELECT unnest($1::BIGINT[]))",
                                      [ids]).fetchall())
        missing = [i for i in ids if i not in rows]
        if missing:
            raise FeatstoreError(f"no item with id {', '.join(map(str, missing[:5]))}"
                                 f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''} in {store.root}")
        found.update(dict.fromkeys(rows[i] for i in ids))
    if paths:
        items = store.items_by_path()
        missing = []
        for p in paths:
            hit = [p] if p in items else match_path(str(p), Path.cwd(), items)
            if not hit:
                missing.append(str(p))
            found.update(dict.fromkeys(hit))
        if missing:
            raise FeatstoreError(f"not in the store: {', '.join(missing[:5])}"
                                 f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}")
    return list(found)


def paths_where(store: Store, where, task: str | None) -> list[str]:
    """The paths of the ok items passing a `--where` condition (checked by the filter guard; `task`: whose label
    and split it reads). Needs a store opened for reading."""
    return [r[0] for r in store.passing_rows(where, task, "SELECT item.path FROM {items} AS item ORDER BY item.path")]


# ---- the edits --------------------------------------------------------------------------------------------------
def set_labels(store: Store, task: str, paths: list[str], label: str | None, who: str) -> dict:
    """Give these items `label` in `task` (None: remove their label)."""
    check_text(task, "task")
    if label is not None:
        check_text(label, "label")
    return _set(store, who, "label" if label is not None else "unlabel", task, "label", task, paths, label,
                {"label": label})


def tag(store: Store, paths: list[str], tag_name: str, remove: bool, who: str) -> dict:
    """Add `tag_name` to these items, or with `remove` take it off."""
    check_tag(tag_name)
    return _set(store, who, "untag" if remove else "tag", None, "tag", tag_name, paths, None if remove else "1",
                {"tag": tag_name})


def exclude(store: Store, paths: list[str], reason: str | None, who: str) -> dict:
    """Exclude these items from fitting and evaluation for `reason`, or with None include them again."""
    if reason is not None:
        check_text(reason, "reason")
    return _set(store, who, "exclude" if reason is not None else "include", None, "excluded", None, paths, reason,
                {"reason": reason})


def _set(store: Store, who: str, action: str, task: str | None, kind: str, key: str | None, paths: list[str],
         after: str | None, detail: dict) -> dict:
    """One edit giving every item in `paths` the value `after` of kind `kind` (label: `key` is the task; tag: the
    tag; excluded: none), each with its value before, so that the edit can be undone."""
    before = edits.current_values(store, kind, key, paths)
    changes = [edits.Change(kind, key, p, before.get(p), after) for p in paths]
    return _done(store, edits.record(store, who, action, task, changes, detail | {"items": len(paths)}),
                 action, task, paths)


def accept(store: Store, task: str, rows: list[dict], who: str, source: str | None = None,
           only=None) -> dict:
    """Give each label issue among `rows` (dicts with path or item_id, given, suggested) its suggested label in
    `task`; `only`: just these item ids. A row whose item's label is no longer the one the audit saw is skipped
    (and reported), as is one naming an item the store no longer has."""
    check_text(task, "task")
    only = set(parse_ids(only)) if only is not None else None
    items = store.items_by_path()
    by_id = {it.item_id: p for p, it in items.items()}
    chosen: dict[str, dict] = {}
    skipped = []
    for row in rows:
        path = row.get("path") if row.get("path") in items else by_id.get(_int_or_none(row.get("item_id")))
        if path is None:
            skipped.append({"path": row.get("path"), "reason": "not in the store"})
            continue
        if only is not None and items[path].item_id not in only:
            continue
        if not row.get("suggested"):
            skipped.append({"path": path, "reason": "no suggested label"})
            continue
        chosen[path] = row
    if only is not None:
        unknown = sorted(only - {items[p].item_id for p in chosen} - {items[s["path"]].item_id for s in skipped
                                                                       if s["path"] in items})
        if unknown:
            raise FeatstoreError(f"item {', '.join(map(str, unknown[:5]))}: not among the audit's label issues")
    now = edits.current_values(store, "label", task, list(chosen))
    changes = []
    for path, row in chosen.items():
        if row.get("given") not in (None, "") and now.get(path) != row["given"]:
            skipped.append({"path": path, "reason": f"label is {now.get(path)!r} now, the audit saw {row['given']!r}"})
            continue
        changes.append(edits.Change("label", task, path, now.get(path), check_text(row["suggested"], "suggested")))
    out = _done(store, edits.record(store, who, "accept", task, changes,
                                    {"source": source, "items": len(changes)}), "accept", task, list(chosen))
    return out | {"skipped": skipped}


def label_issue_rows(store: Store, task: str, csv_path: str | Path | None) -> tuple[list[dict], str]:
    """The label issues to accept, and where they came from: the rows of finding 'label_issue' in a CSV written by
    `featstore audit --csv`, or without a CSV, the task's newest stored audit."""
    if csv_path is None:
        rows = [f for f in edits.audit_findings(store, task) if f["kind"] == "label_issue"]
        if not rows and not edits.audit_findings(store, task):
            raise FeatstoreError(f"no stored audit of task {task!r} (audit it first: `featstore audit --task "
                                 f"{task}`, or give the audit's --csv file)")
        return rows, "the stored audit"
    csv_path = Path(csv_path)
    columns, rows = read_user_csv(csv_path)
    needed = {"finding", "path", "given", "suggested"}
    if not needed <= set(columns):
        raise FeatstoreError(f"{csv_path}: not a CSV written by `featstore audit --csv` (needs columns "
                             f"{', '.join(sorted(needed))}; found: {', '.join(columns) or 'no header'})")
    return [r for r in rows if r.get("finding") == "label_issue"], str(csv_path)


def undo(store: Store, who: str, edit_id: int | None = None) -> dict:
    """Undo an edit (default: the newest not undone yet); see store/edits.py undo."""
    out = edits.undo(store, who, edit_id)
    return out | {"generation": store.generation()}


def _done(store: Store, edit_id: int | None, action: str, task: str | None, paths: list[str]) -> dict:
    changed = 0 if edit_id is None else store.con.execute("SELECT count(*) FROM edit_rows WHERE edit_id = ?",
                                                           [edit_id]).fetchone()[0]
    return {"edit_id": edit_id, "action": action, "task": task, "items": len(paths), "changed": changed,
            "unchanged": len(paths) - changed, "generation": store.generation()}


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
