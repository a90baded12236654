"""The duplicates command: exact copies, near-duplicate groups, and train/test leakage for a task."""
from __future__ import annotations

import click

from .common import json_option, store_option
from .common import open_store
from .output import emit_json, pct, table


@click.command()
@click.option("--threshold", type=float, default=0.97, help="Cosine similarity at or above which two distinct "
                                                            "contents count as near-duplicates.")
@click.option("--task", default=None, help="Also report near-duplicates straddling this task's held-out split.")
@click.option("--model", default=None, help="Embedding set: model name or set id [default: the newest]")
@click.option("--limit", type=int, default=20, help="Groups / pairs to print (--json lists all).")
@store_option
@json_option
def duplicates(threshold, task, model, limit, store_path, as_json):
    """Exact duplicates (same bytes) and near-duplicate groups (by cosine similarity)."""
    out = open_store(store_path).duplicates(threshold=threshold, task=task, model=model)
    if as_json:
        return emit_json(out)
    click.echo(f"{out['model']} ({out['live_vectors']} distinct contents): {len(out['exact'])} exact duplicate "
               f"groups (same bytes), {len(out['near_groups'])} near-duplicate groups at cosine >= {threshold} "
               f"({out['near_pairs']} pairs)")
    for g in out["exact"][:limit]:
        click.echo(f"same bytes at {len(g['paths'])} paths: " + ", ".join(g["paths"][:4])
                   + (" ..." if len(g["paths"]) > 4 else ""))
    if out["near_groups"]:
        click.echo("")
        click.echo(table([[i + 1, g["size"], f"{g['max_similarity']:.4f}",
                           ", ".join(sorted({str(it['label']) for it in g["items"]})),
                           "  ".join(it["path"] for it in g["items"][:3]) + (" ..." if g["size"] > 3 else "")]
                          for i, g in enumerate(out["near_groups"][:limit])],
                         ["group", "items", "max sim", "labels", "paths"], "rrrll"))
    if task:
        leak = out["leakage"]
        click.echo("")
        click.echo(f"leakage for task {task!r}: {len(leak['pairs'])} near-duplicate pairs straddle the stored split; "
                   f"{leak['test_items_affected']} of {leak['test_items']} held-out items "
                   f"({pct(leak['test_items_affected'] / max(leak['test_items'], 1))}) have a near-copy in training "
                   "(exact copies never straddle it: the split is by content)")
        if leak["pairs"]:
            click.echo(table([[f"{p['similarity']:.4f}", p["train_label"], p["test_label"], p["train"], p["test"]]
                              for p in leak["pairs"][:limit]],
                             ["sim", "train label", "test label", "train item", "held-out item"], "rllll"))
