"""Curation commands: tag, exclude, include, undo, history, and the edits of `label` (--set, --unset, --accept).
Each write is one edit in the store's edit log (apps/curate.py, store/edits.py)."""
from __future__ import annotations

import click

from featstore.errors import FeatstoreError

from .common import json_option, open_store, store_option
from .output import emit_json, one_line, table


def chosen_items(fn):
    """The options naming the items an edit applies to: paths as arguments, --ids, or --where (with --task)."""
    fn = click.argument("paths", nargs=-1, type=click.Path())(fn)
    fn = click.option("--ids", default=None, help="Item ids, e.g. 3,17,42.")(fn)
    fn = click.option("--where", default=None, help="SQL condition on the stored items (as search --where), e.g. "
                                                    "\"label = 'roses'\" or \"tag = 'blurry'\".")(fn)
    return fn


def items_of(paths, ids, where):
    """(items, where) for the Python API: exactly one way of choosing them."""
    given = [bool(paths), ids is not None, where is not None]
    if sum(given) != 1:
        raise FeatstoreError("choose the items one way: PATHS, --ids 3,17,42 or --where CONDITION")
    if ids is not None:
        from featstore.apps.curate import parse_ids

        return parse_ids(ids), None
    return (list(paths) or None), where


def print_edit(out: dict, what: str) -> None:
    """One line for an edit: what changed, and how to undo it."""
    if out["edit_id"] is None:
        click.echo(f"nothing changed: the {out['items']} items already {what}")
        return
    click.echo(f"edit {out['edit_id']}: {out['changed']} item{'s' if out['changed'] != 1 else ''} {what}" + (
        f" ({out['unchanged']} already were)" if out["unchanged"] else "")
        + f"; undo: featstore undo --edit {out['edit_id']}")


@click.command("tag")
@click.argument("tag_name", metavar="TAG")
@chosen_items
@click.option("--remove", is_flag=True, help="Take the tag off instead.")
@click.option("--task", default=None, help="Whose labels --where reads [default: the store's only task].")
@store_option
@json_option
def tag(tag_name, paths, ids, where, remove, task, store_path, as_json):
    """Add TAG to items (or take it off with --remove); filter on it with --where "tag = 'TAG'"."""
    items, where = items_of(paths, ids, where)
    out = open_store(store_path).tag(items, tag_name, remove=remove, where=where, task=task)
    if as_json:
        return emit_json(out)
    print_edit(out, f"{'untagged' if remove else 'tagged'} {tag_name!r}")


@click.command("exclude")
@chosen_items
@click.option("--reason", default="excluded", help="Why: duplicate, outlier, or a short text of your own.")
@click.option("--task", default=None, help="Whose labels --where reads [default: the store's only task].")
@store_option
@json_option
def exclude(paths, ids, where, reason, task, store_path, as_json):
    """Leave items out of fitting and evaluation (fit-head, audit), e.g. near-duplicates or outliers."""
    items, where = items_of(paths, ids, where)
    out = open_store(store_path).exclude(items, reason=reason, where=where, task=task)
    if as_json:
        return emit_json(out)
    print_edit(out, f"excluded ({reason})")


@click.command("include")
@chosen_items
@click.option("--task", default=None, help="Whose labels --where reads [default: the store's only task].")
@store_option
@json_option
def include(paths, ids, where, task, store_path, as_json):
    """Take items' exclusion back: fit-head uses them again."""
    items, where = items_of(paths, ids, where)
    out = open_store(store_path).include(items, where=where, task=task)
    if as_json:
        return emit_json(out)
    print_edit(out, "included again")


@click.command("undo")
@click.option("--edit", "edit_id", type=int, default=None,
              help="The edit to undo (`featstore history` lists them) [default: the newest not undone yet].")
@store_option
@json_option
def undo(edit_id, store_path, as_json):
    """Undo an edit exactly: every label, tag and exclusion it changed goes back to what it was. Undoing an undo
    redoes the edit."""
    out = open_store(store_path).undo(edit_id)
    if as_json:
        return emit_json(out)
    click.echo(f"edit {out['edit_id']}: undid edit {out['undone']} ({out['action']}), {out['changed']} values "
               "restored")


@click.command("history")
@click.option("--limit", type=click.IntRange(1), default=20, help="How many edits to list, newest first.")
@store_option
@json_option
def history(limit, store_path, as_json):
    """The edit log: who changed what and when (labels, tags, exclusions), newest first."""
    rows = open_store(store_path).history(limit)
    if as_json:
        return emit_json(rows)
    if not rows:
        click.echo("no edits yet")
        return
    click.echo(table([[r["edit_id"], r["at"], r["who"], r["action"], r["task"] or "-", r["count"],
                       f"by {r['undone']}" if r["undone"] else "-", r["summary"]] for r in rows],
                     ["edit", "at", "who", "action", "task", "items", "undone", "what"], "rlllllrl"))


def label_edit(task, paths, ids, where, set_label, unset, accept, only, store_path, as_json):
    """`featstore label` without --csv: --set LABEL / --unset on chosen items, or --accept an audit's CSV."""
    fs = open_store(store_path)
    if accept is not None:
        if set_label is not None or unset or paths or ids is not None or where is not None:
            raise FeatstoreError("--accept takes the audit's CSV alone (narrow it with --only ID,...)")
        out = fs.accept(task, accept, only=only)
        if as_json:
            return emit_json(out)
        print_edit(out, f"given their suggested label in {task!r}")
        for row in out["skipped"][:10]:
            click.echo(f"skipped: {one_line(row['path'])}: {row['reason']}")
        if len(out["skipped"]) > 10:
            click.echo(f"... {len(out['skipped']) - 10} more skipped (--json lists all)")
        return
    if only is not None:
        raise FeatstoreError("--only applies to --accept")
    if (set_label is None) == (not unset):
        raise FeatstoreError("give --csv FILE, --set LABEL, --unset or --accept AUDIT_CSV")
    items, where = items_of(paths, ids, where)
    out = fs.set_labels(task, items, None if unset else set_label, where=where)
    if as_json:
        return emit_json(out)
    print_edit(out, f"labelled {set_label!r} in {task!r}" if not unset else f"unlabelled in {task!r}")
