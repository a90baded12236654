"""The audit and select commands: what is wrong with a task's labels and data, and what to label next."""
from __future__ import annotations

import csv
import sys

import click

from .common import log, open_store, store_option
from .output import emit_json, pct, table

json_to = click.option("--json", "json_to", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
                       help="Write the report as JSON to FILE, or print it (--json alone) instead of the tables.")


@click.command()
@click.option("--task", default=None, help="Task to audit [default: the store's only task].")
@click.option("--model", default=None, help="Embedding set: model name or set id [default: the newest holding the "
                                            "task]")
@click.option("-k", type=click.IntRange(1, 100), default=10, help="Neighbours per item in the kNN graph.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.97,
              help="Cosine similarity at or above which two contents are near-duplicates.")
@click.option("--limit", type=click.IntRange(1), default=50, help="Outliers to list (label issues, near-duplicates "
                                                                  "and leakage are listed in full).")
@click.option("--show", type=click.IntRange(0), default=10, help="Rows printed per finding.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write every finding's rows to this CSV (finding, rank, item_id, path, given, suggested, "
                   "score).")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw a contact sheet of the top-ranked items of each finding (.png, .svg or .pdf, by "
                   "the extension; needs matplotlib: pip install 'featstore[plots]').")
@store_option
@json_to
def audit(task, model, k, threshold, limit, show, csv_path, sheet, store_path, json_to):
    """Label issues, outliers, near-duplicates and train/held-out leakage of a task, ranked."""
    quiet = json_to == "-"
    out = open_store(store_path).audit(task, model=model, k=k, threshold=threshold, limit=limit, sheet=sheet,
                                       log=(lambda _m: None) if quiet else log)
    if csv_path:
        _write_csv(out, csv_path)
    if json_to and json_to != "-":
        with open(json_to, "w", encoding="utf-8") as f:
            import json

            json.dump(out, f, indent=2, default=str, ensure_ascii=False)
    if quiet:
        return emit_json(out)
    _print_report(out, show)


def _rows(out: dict):
    """(finding, rank, item_id, path, given, suggested, score) for every row of every finding."""
    for r, it in enumerate(out["label_issues"], 1):
        yield "label_issue", r, it["item_id"], it["path"], it["given"], it["suggested"], it["score"]
    for r, it in enumerate(out["outliers"], 1):
        yield "outlier", r, it["item_id"], it["path"], it["label"], "", it["score"]
    for g, grp in enumerate(out["near_duplicates"]["groups"], 1):
        for it in grp["items"]:
            yield "near_duplicate", g, it["item_id"], it["path"], it["label"], "", grp["max_similarity"]
    for r, p in enumerate(out["leakage"]["pairs"], 1):
        yield "leakage", r, "", p["test"], p["test_label"], p["train"], p["similarity"]


def _write_csv(out: dict, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["finding", "rank", "item_id", "path", "given", "suggested", "score"])
        w.writerows(_rows(out))


def _print_report(out: dict, show: int) -> None:
    g = out["graph"]
    click.echo(f"audit of task {out['task']!r}: {out['n_items']} labelled items, {len(out['classes'])} classes, "
               f"{out['model']}; kNN graph k={g['k']} ({'exact' if g['exact'] else 'recall %.3f' % g['recall']}, "
               f"{g['action']}, {g['recomputed']} rows computed)")
    issues = out["label_issues"]
    click.echo(f"\nlabel issues: {len(issues)} items whose label the evidence contradicts "
               f"({pct(len(issues) / max(out['n_items'], 1))}), most likely first")
    if issues and show:
        click.echo(table([[i + 1, f"{r['score']:.3f}", r["given"], r["suggested"], r["item_id"], r["path"]]
                          for i, r in enumerate(issues[:show])],
                         ["rank", "score", "given", "suggested", "id", "path"], "rrllrl"))
        _more(len(issues), show, "label issues")
    click.echo("\noutliers: the most unique items (1 - mean cosine to their nearest)")
    if show:
        click.echo(table([[i + 1, f"{r['score']:.3f}", r["label"] or "-", r["item_id"], r["path"]]
                          for i, r in enumerate(out["outliers"][:show])],
                         ["rank", "uniqueness", "label", "id", "path"], "rrlrl"))
        _more(len(out["outliers"]), show, f"of the top {len(out['outliers'])} outliers",
              "lists them; --limit N ranks more")
    nd = out["near_duplicates"]
    click.echo(f"\nnear-duplicates: {len(nd['groups'])} groups at cosine >= {nd['threshold']}, "
               f"{len(nd['exact'])} groups of exact copies")
    for i, grp in enumerate(nd["groups"][:show]):
        click.echo(f"  {i + 1}. {grp['size']} items, max {grp['max_similarity']:.4f}: "
                   + "  ".join(it["path"] for it in grp["items"][:3]) + (" ..." if grp["size"] > 3 else ""))
    _more(len(nd["groups"]), show, "near-duplicate groups")
    leak = out["leakage"]
    acc = ("-" if leak["accuracy"] is None else pct(leak["accuracy"]))
    acc_wo = ("-" if leak["accuracy_without_leaked"] is None else pct(leak["accuracy_without_leaked"]))
    click.echo(f"\nleakage: {len(leak['pairs'])} near-duplicate pairs straddle the stored split; "
               f"{leak['test_items_affected']} of {leak['test_items']} held-out items have a near-copy in training; "
               f"held-out accuracy {acc}, {acc_wo} without them")
    for p in leak["pairs"][:show]:
        click.echo(f"  {p['similarity']:.4f}  train {p['train']}  held-out {p['test']}")
    _more(len(leak["pairs"]), show, "leakage pairs")
    if out.get("sheet"):
        click.echo(f"\ncontact sheet: {out['sheet']['sheet']} ({out['sheet']['tiles']} thumbnails)")


def _more(total: int, shown: int, what: str, listed: str = "lists all") -> None:
    """The line saying how many rows of a finding were not printed, and how to see them."""
    if total > shown:
        click.echo(f"... {total - shown} more {what} (--show N, --json or --csv {listed})")


@click.command("select")
@click.option("--task", default=None, help="Task to label [default: the store's only task].")
@click.option("-n", "n", type=click.IntRange(1), required=True, help="How many items to pick.")
@click.option("--strategy", type=click.Choice(["diverse", "uncertain", "typical"]), default="diverse",
              help="diverse: one per k-means cluster; uncertain: smallest margin of a head on the labelled items; "
                   "typical: the densest items.")
@click.option("--seed", type=int, default=0, help="Seed of the clustering (diverse).")
@click.option("--model", default=None, help="Embedding set: model name or set id [default: the newest holding the "
                                            "task]")
@click.option("--include-labelled", is_flag=True, help="Choose among all items, not only those without a label.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the picks as CSV (path, item_id, rank, score) to this file [default: print the CSV].")
@store_option
@json_to
def select(task, n, strategy, seed, model, include_labelled, out_path, store_path, json_to):
    """Pick N items to label next, as a CSV of paths."""
    out = open_store(store_path).select(task, n=n, strategy=strategy, seed=seed, model=model,
                                        include_labelled=include_labelled, log=log)
    if out["note"]:
        log(out["note"])
    if json_to == "-":
        return emit_json(out)
    if json_to:
        import json

        with open(json_to, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, ensure_ascii=False)
    f = open(out_path, "w", newline="", encoding="utf-8") if out_path else sys.stdout
    try:
        w = csv.writer(f)
        w.writerow(["path", "item_id", "rank", "score"])
        for it in out["items"]:
            w.writerow([it["path"], it["item_id"], it["rank"], "" if it["score"] is None else it["score"]])
    finally:
        if out_path:
            f.close()
    if out_path:
        log(f"{len(out['items'])} of {out['pool']} items chosen ({strategy}) -> {out_path}")
