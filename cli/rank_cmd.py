"""The rank command: which backbone and which cut suit a task, scored from the cached features (LogME)."""
from __future__ import annotations

import click

from .common import json_option, log, open_store, store_option
from .output import emit_json, pct, table


@click.command()
@click.option("--task", default=None, help="Task to rank feature sets for [default: the store's only task].")
@store_option
@json_option
def rank(task, store_path, as_json):
    """Score every embedding set and cut holding the task with LogME (seconds, no fitting), beside the held-out
    accuracy of the heads stored on each, and say how well the score orders them (Kendall's tau)."""
    out = open_store(store_path).rank(task, log=(lambda _m: None) if as_json else log)
    if as_json:
        return emit_json(out)
    click.echo(f"task {out['task']!r}: {len(out['rows'])} feature sets, best LogME first "
               "(training part of the stored split)")
    click.echo(table([[r["features"], r["model"], r["cut"], r["dim"], r["n"], f"{r['logme']:.4f}",
                       f"{r['seconds']:.2f}", "-" if r["accuracy"] is None else pct(r["accuracy"]),
                       r["head"] or "-"] for r in out["rows"]],
                     ["features", "model", "cut", "dim", "n", "LogME", "s", "held-out acc", "head"], "lllrrrrrl"))
    if out["kendall_tau"] is None:
        click.echo(f"Kendall tau: needs at least two sets with a stored head and distinct scores "
                   f"({out['n_compared']} with a head); fit one with `featstore fit-head --model SET`")
    else:
        click.echo(f"Kendall tau (LogME vs held-out accuracy, {out['n_compared']} sets): {out['kendall_tau']:.3f}"
                   + (f" (p = {out['p_value']:.3g})" if out["p_value"] is not None else ""))
