"""Curation in the store: labels set by hand, tags, items excluded from fitting, and the edit log that records each
such write (who, when, what, and every value before and after) so that any edit can be undone exactly.

One edit is one transaction: its values, its log rows and a new store generation (the server's snapshot and the
Python API's cached reads see it) commit together or not at all. Writes need the store opened for writing (the
writer lock); the reads work on any Store, a server's snapshot too, and on stores older than the tables (empty).

Also kept here: the newest `featstore audit` findings of each task (apps/audit.py stores them), which the web app
shows and `accept` takes suggested labels from.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from featstore.errors import FeatstoreError
from featstore.store.db import Store
from featstore.store.keys import upsert

@dataclass(frozen=True)
class Change:
    """One value an edit changes: `kind` label (key: the task), tag (key: the tag; value '1' when present) or
    excluded (value: the reason), of item `path`; None is 'no value' (no label, tag absent, not excluded)."""

    kind: str
    key: str | None
    path: str
    before: str | None
    after: str | None


def os_user() -> str:
    """The user name edits made from the CLI or the Python API are recorded under: the operating system's."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:          # no user name in this environment
        return "unknown"


def record_labels(store: Store, task: str, labels: dict[str, str], who: str, action: str,
                  detail: dict | None = None) -> int | None:
    """Set these path -> label of `task` as one edit (see record); the edit's id, or None when nothing changed."""
    before = current_values(store, "label", task, list(labels))
    return record(store, who, action, task, [Change("label", task, p, before.get(p), lab) for p, lab in labels.items()],
                  detail)


# ---- reading ---------------------------------------------------------------------------------------------------
def current_values(store: Store, kind: str, key: str | None, paths: list[str]) -> dict[str, str]:
    """path -> the value now (paths without one are left out) of one kind (and key) for these paths."""
    if not paths:
        return {}
    if kind == "label":
        sql = "SELECT path, label FROM labels WHERE task = $key AND path IN (SELECT unnest($paths))"
        params = {"key": key}
    elif kind == "tag":
        sql, params = (f"SELECT path, '1' FROM {store.relation('tags')} WHERE tag = $key "
                       "AND path IN (SELECT unnest($paths))", {"key": key})
    elif kind == "excluded":
        sql = f"SELECT path, reason FROM {store.relation('exclusions')} WHERE path IN (SELECT unnest($paths))"
        params = {}
    else:
        raise ValueError(kind)
    return dict(store.con.execute(sql, params | {"paths": list(paths)}).fetchall())


def tags_of(store: Store, paths: list[str]) -> dict[str, list[str]]:
    """path -> its tags (sorted; [] for a path without any) for these paths."""
    rows = store.con.execute(f"SELECT path, list(tag ORDER BY tag) FROM {store.relation('tags')} "
                             "WHERE path IN (SELECT unnest($1::VARCHAR[])) GROUP BY path", [list(paths)]).fetchall()
    found = dict(rows)
    return {p: list(found.get(p) or []) for p in paths}


def all_tags(store: Store) -> dict[str, int]:
    """Every tag -> how many items carry it, most used first."""
    return dict(store.con.execute(f"SELECT tag, count(*) AS n FROM {store.relation('tags')} GROUP BY tag "
                                  "ORDER BY n DESC, tag").fetchall())


def excluded_paths(store: Store) -> dict[str, str]:
    """path -> why it is excluded from fitting and evaluation ('duplicate', 'outlier' or the user's text)."""
    return dict(store.con.execute(f"SELECT path, reason FROM {store.relation('exclusions')} ORDER BY path").fetchall())


def audit_findings(store: Store, task: str) -> list[dict]:
    """The newest stored `featstore audit` of `task`, one dict per finding's item (kind label_issue, outlier,
    near_duplicate or leakage, in the audit's order); [] when none is stored."""
    cur = store.con.execute(f"SELECT kind, rank, item_id, path, score, given, suggested, grp, reason, made_at FROM "
                            f"{store.relation('audit_findings')} WHERE task = ? ORDER BY "
                            "CASE kind WHEN 'label_issue' THEN 0 WHEN 'outlier' THEN 1 WHEN 'near_duplicate' THEN 2 "
                            "ELSE 3 END, rank, path", [task])
    return [{"kind": r[0], "rank": r[1], "item_id": r[2], "path": r[3], "score": r[4], "given": r[5],
             "suggested": r[6], "group": r[7], "reason": r[8], "audited_at": str(r[9])} for r in cur.fetchall()]


def history(store: Store, limit: int = 50) -> list[dict]:
    """The newest `limit` edits, newest first: edit_id, at, who, action, task, count (values changed), undone (the
    edit that undid it, or None), summary (one line)."""
    rows = store.con.execute(
        f"""SELECT e.edit_id, e.made_at, e.who, e.action, e.task, e.detail, e.undone_by,
                   (SELECT count(*) FROM {store.relation('edit_rows')} r WHERE r.edit_id = e.edit_id)
            FROM {store.relation('edits')} e ORDER BY e.edit_id DESC LIMIT ?""", [int(limit)]).fetchall()
    out = []
    for edit_id, at, who, action, task, detail, undone_by, count in rows:
        detail = json.loads(detail) if isinstance(detail, str) else (detail or {})
        out.append({"edit_id": edit_id, "at": str(at)[:19], "who": who, "action": action, "task": task,
                    "count": count, "undone": undone_by, "summary": summary(action, task, detail, count)})
    return out


def edit_count(store: Store) -> int:
    return store.con.execute(f"SELECT count(*) FROM {store.relation('edits')}").fetchone()[0]


def summary(action: str, task: str | None, detail: dict, count: int) -> str:
    """One line saying what an edit did."""
    n = f"{count} item{'s' if count != 1 else ''}"
    if action == "label":
        return f"{n} labelled {detail.get('label')!r} in {task!r}"
    if action == "unlabel":
        return f"label removed from {n} in {task!r}"
    if action == "label-csv":
        return f"{n} labelled in {task!r} from {detail.get('source')}"
    if action == "accept":
        src = detail.get("source") or "the stored audit"
        return f"{n} given their suggested label in {task!r} (from {src})"
    if action == "tag":
        return f"{n} tagged {detail.get('tag')!r}"
    if action == "untag":
        return f"tag {detail.get('tag')!r} removed from {n}"
    if action == "exclude":
        return f"{n} excluded ({detail.get('reason')})"
    if action == "include":
        return f"{n} included again"
    if action == "undo":
        return f"undid edit {detail.get('undid')} ({n})"
    return f"{action}: {n}"


# ---- writing ---------------------------------------------------------------------------------------------------
def record(store: Store, who: str, action: str, task: str | None, changes: list[Change],
           detail: dict | None = None) -> int | None:
    """Apply `changes` (those whose value really changes) and log them as one edit, in one transaction that also
    moves the store generation on. Returns the new edit's id, or None when nothing changes (nothing logged)."""
    _require_writer(store)
    changes = [c for c in changes if c.before != c.after]
    if not changes:
        return None
    with store.transaction():
        edit_id = _log(store, who, action, task, changes, detail or {})
        _apply(store, changes)
        store._bump_generation()
    return edit_id


def undo(store: Store, who: str, edit_id: int | None = None) -> dict:
    """Undo edit `edit_id` (default: the newest edit not undone yet that is no undo itself): every value it changed
    goes back to what it was before, as one new edit (action 'undo'); undoing an undo redoes. Refused when a value
    it changed has been changed again since (undo that first), or when it was undone already.
    Returns {"undone", "edit_id" (the undo's own), "changed"}."""
    _require_writer(store)
    edits = store.relation("edits")
    if edit_id is None:
        row = store.con.execute(f"SELECT edit_id FROM {edits} WHERE undone_by IS NULL AND action <> 'undo' "
                                "ORDER BY edit_id DESC LIMIT 1").fetchone()
        if row is None:
            raise FeatstoreError(f"{store.root}: nothing to undo (no edit that is not undone already)")
        edit_id = row[0]
    row = store.con.execute(f"SELECT action, task, detail, undone_by FROM {edits} WHERE edit_id = ?",
                            [int(edit_id)]).fetchone()
    if row is None:
        raise FeatstoreError(f"no edit {edit_id} in {store.root} (`featstore history` lists them)")
    action, task, detail, undone_by = row
    if undone_by is not None:
        raise FeatstoreError(f"edit {edit_id} was undone already (by edit {undone_by})")
    rows = store.con.execute("SELECT kind, key, path, before, after FROM edit_rows WHERE edit_id = ? ORDER BY path",
                             [int(edit_id)]).fetchall()
    changes = [Change(k, key, p, after, before) for k, key, p, before, after in rows]       # reversed
    moved = _changed_since(store, changes)
    if moved:
        later = store.con.execute(
            f"""SELECT max(r.edit_id) FROM edit_rows r JOIN {edits} e ON e.edit_id = r.edit_id
                WHERE r.edit_id > $id AND e.undone_by IS NULL AND r.kind || '/' || coalesce(r.key, '') || '/' || r.path
                      IN (SELECT unnest($keys::VARCHAR[]))""",
            {"id": int(edit_id), "keys": [f"{c.kind}/{c.key or ''}/{c.path}" for c in moved]}).fetchone()
        by = f"edit {later[0]}" if later and later[0] else "a write that is not in the edit log"
        raise FeatstoreError(f"edit {edit_id} cannot be undone exactly: {len(moved)} of the values it changed were "
                             f"changed again since (by {by}); undo that first")
    detail = json.loads(detail) if isinstance(detail, str) else (detail or {})
    with store.transaction():
        new_id = _log(store, who, "undo", task, changes, {"undid": int(edit_id), "action": action})
        _apply(store, changes)
        store.con.execute("UPDATE edits SET undone_by = ? WHERE edit_id = ?", [new_id, int(edit_id)])
        if action == "undo":           # a redo: the edit it had undone counts as done again
            store.con.execute("UPDATE edits SET undone_by = NULL WHERE edit_id = ?", [int(detail.get("undid", -1))])
        store._bump_generation()
    return {"undone": int(edit_id), "edit_id": new_id, "changed": len(changes), "action": action, "task": task}


def save_audit_findings(store: Store, task: str, findings: list[dict]) -> int:
    """Store one audit's findings of `task`, replacing the previous ones (one transaction). Returns how many."""
    _require_writer(store)
    cols = ("kind", "rank", "item_id", "path", "score", "given", "suggested", "group", "reason")
    data = [[f.get(c) for f in findings] for c in cols]
    with store.transaction():
        store.con.execute("DELETE FROM audit_findings WHERE task = ?", [task])
        if findings:
            store.con.execute(
                "INSERT INTO audit_findings SELECT $task, $at, unnest($kind::VARCHAR[]), unnest($rank::INTEGER[]), "
                "unnest($item_id::BIGINT[]), unnest($path::VARCHAR[]), unnest($score::DOUBLE[]), "
                "unnest($given::VARCHAR[]), unnest($suggested::VARCHAR[]), unnest($grp::INTEGER[]), "
                "unnest($reason::VARCHAR[])",
                {"task": task, "at": datetime.datetime.now(), **dict(zip(
                    ("kind", "rank", "item_id", "path", "score", "given", "suggested", "grp", "reason"), data))})
        store._bump_generation()
    return len(findings)


def _require_writer(store: Store) -> None:
    if not store.writable:
        raise FeatstoreError(f"{store.root}: opened for reading; edits need the store's writer")


def _log(store: Store, who: str, action: str, task: str | None, changes: list[Change], detail: dict) -> int:
    edit_id = store.con.execute(
        "INSERT INTO edits (made_at, who, action, task, detail) VALUES (?, ?, ?, ?, ?) RETURNING edit_id",
        [datetime.datetime.now(), who, action, task, json.dumps(detail)]).fetchone()[0]
    store.con.execute("INSERT INTO edit_rows SELECT $id, unnest($kind), unnest($key), unnest($path), "
                      "unnest($before), unnest($after)",
                      {"id": edit_id, **_columns(changes)})
    return edit_id


def _columns(changes: list[Change]) -> dict:
    return {"kind": [c.kind for c in changes], "key": [c.key for c in changes], "path": [c.path for c in changes],
            "before": [c.before for c in changes], "after": [c.after for c in changes]}


def _apply(store: Store, changes: list[Change]) -> None:
    """Write each change's `after` (set where a value, remove where None), a statement per kind, key and way."""
    groups: dict[tuple, list[Change]] = {}
    for c in changes:
        groups.setdefault((c.kind, c.key, c.after is None), []).append(c)
    for (kind, key, remove), group in groups.items():
        paths = [c.path for c in group]
        values = [c.after for c in group]
        if kind == "label" and remove:
            store.con.execute("DELETE FROM labels WHERE task = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
                              [key, paths])
        elif kind == "label":
            upsert(store.con, "labels", ("task", "path"), ["task", "path", "label"],
                   "(SELECT $1 AS task, unnest($2::VARCHAR[]) AS path, unnest($3::VARCHAR[]) AS label)",
                   [key, paths, values])
        elif kind == "tag" and remove:
            store.con.execute("DELETE FROM tags WHERE tag = ? AND path IN (SELECT unnest(?::VARCHAR[]))", [key, paths])
        elif kind == "tag":
            store.con.execute("INSERT INTO tags SELECT unnest($1::VARCHAR[]), $2 ON CONFLICT DO NOTHING", [paths, key])
        elif kind == "excluded" and remove:
            store.con.execute("DELETE FROM exclusions WHERE path IN (SELECT unnest(?::VARCHAR[]))", [paths])
        elif kind == "excluded":
            store.con.execute("INSERT INTO exclusions SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]) "
                              "ON CONFLICT (path) DO UPDATE SET reason = excluded.reason", [paths, values])
        else:
            raise ValueError(kind)


def _changed_since(store: Store, changes: list[Change]) -> list[Change]:
    """The reversed changes whose value now is no longer what the edit left (its `before` here)."""
    moved = []
    groups: dict[tuple, list[Change]] = {}
    for c in changes:
        groups.setdefault((c.kind, c.key), []).append(c)
    for (kind, key), group in groups.items():
        now = current_values(store, kind, key, [c.path for c in group])
        moved += [c for c in group if now.get(c.path) != c.before]
    return moved
