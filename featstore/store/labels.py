"""Labels from a CSV: one embedded dataset can carry many tasks (besides the subfolder-name task)."""
from __future__ import annotations

from pathlib import Path

from featstore.errors import FeatstoreError, one_of
from featstore.store.db import Store
from featstore.store.edits import os_user, record_labels
from featstore.store.metadata import match_path
from featstore.store.where_guard import check_where
from featstore.user_csv import read_user_csv


def task_for(store: Store, task: str | None, required: bool = False) -> str | None:
    """The task whose labels a command reads: the one asked for (it must exist), else the store's only task.
    With several tasks and none asked for, the user must choose; with none, None (or an error if `required`)."""
    tasks = sorted(store.tasks())
    if task is not None:
        if task not in tasks:
            raise one_of("task", task, tasks)
        return task
    if len(tasks) > 1:
        raise FeatstoreError(f"several tasks in this store ({', '.join(tasks)}): pass --task")
    if not tasks and required:
        raise FeatstoreError("no labelled task in this store yet: embed a folder of class subfolders, or run "
                             "`featstore label --task T --csv labels.csv`")
    return tasks[0] if tasks else None


def shown_task(store: Store, task: str | None, where=None) -> str | None:
    """The task whose labels results show: as task_for, except that with several tasks and none asked for the
    results go without labels (None), unless the condition `where` reads label or split."""
    if task is None and len(store.tasks()) > 1 and not reads_labels(where, store.metadata_columns()):
        return None
    return task_for(store, task)


def reads_labels(where, extra_columns=()) -> bool:
    """Whether a condition (text, or checked by the filter guard with the store's metadata columns
    `extra_columns`) reads the label or split column."""
    if where is None:
        return False
    return bool(check_where(where, extra_columns).columns & {"label", "split"})


def several_tasks_note(store: Store, task: str | None) -> str | None:
    """A note when results carry no labels because the store has several tasks and none was asked for."""
    tasks = sorted(store.tasks())
    if task is not None or len(tasks) < 2:
        return None
    return f"labels not shown: this store has several tasks ({', '.join(tasks)}); --task T shows one's labels"


def label_from_csv(store: Store, task: str, csv_path: str | Path) -> dict:
    """Rows (path or content hash, label) -> the task's labels, as one edit (store/edits.py: in the edit log,
    undoable). Relative paths are tried against the CSV's folder, then the current directory. Rows that match
    nothing in the store are reported, not stored."""
    csv_path = Path(csv_path)
    columns, rows = read_user_csv(csv_path)
    key = "path" if "path" in columns else "hash" if "hash" in columns else None
    if key is None or "label" not in columns:
        raise FeatstoreError(f"{csv_path}: needs a header with a 'path' or 'hash' column and a 'label' column "
                             f"(found: {', '.join(columns) or 'no header'})")
    items = store.items_by_path()
    by_hash: dict[str, list[str]] = {}
    for item in items.values():
        if item.hash:
            by_hash.setdefault(item.hash, []).append(item.path)
    labels: dict[str, str] = {}
    unmatched = []
    for line, row in enumerate(rows, start=2):
        value, lab = row.get(key, ""), row.get("label", "")
        if not value or not lab:
            unmatched.append({"line": line, "key": value, "reason": f"empty {key if not value else 'label'}"})
            continue
        paths = by_hash.get(value.lower(), []) if key == "hash" else match_path(value, csv_path.parent, items)
        if not paths:
            unmatched.append({"line": line, "key": value, "reason": "not in the store"})
        for p in paths:
            labels[p] = lab
    counts = _label_changes(store, task, labels)
    edit_id = record_labels(store, task, labels, os_user(), "label-csv", {"source": csv_path.name})
    return {"task": task, "csv": str(csv_path), "key": key, "rows": len(rows), "labelled_paths": len(labels),
            "distinct_labels": len(set(labels.values())), **counts, "unmatched": unmatched, "edit_id": edit_id}


def _label_changes(store: Store, task: str, labels: dict[str, str]) -> dict[str, int]:
    """How many of these path labels are new to the task, change a stored label, or repeat it."""
    before = dict(store.con.execute("SELECT path, label FROM labels WHERE task = ? AND path IN (SELECT unnest(?))",
                                    [task, list(labels)]).fetchall())
    changed = sum(p in before and before[p] != lab for p, lab in labels.items())
    return {"new": len(labels) - len(before), "changed": changed, "unchanged": len(before) - changed}
