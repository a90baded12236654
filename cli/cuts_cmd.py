"""`featstore models cuts MODEL`: where a backbone can be cut for cached activations (embed --cut NAME)."""
from __future__ import annotations

import click

from .common import json_option
from .output import emit_json, table


@click.command("cuts")
@click.argument("model", required=False)
@json_option
def models_cuts(model, as_json):
    """The cut points of MODEL [default: efficientnet-lite0]: `featstore embed SOURCE --cut NAME` stores the
    activations there (fp16, per view) for fine-tuning the layers above."""
    from featstore.api.cut_points import cut_rows

    rows = cut_rows(model)
    if as_json:
        return emit_json(rows)
    click.echo(table([[r["cut"], r["description"], " x ".join(map(str, r["shape"])) if r["shape"] else "-",
                       f"{r['bytes_per_view'] / 1e3:.1f} KB" if r["bytes_per_view"] else "-"] for r in rows],
                     ["cut", "activation of", "shape", "fp16 per view"], "llll"))
    click.echo(f"use: featstore embed SOURCE --model {rows[0]['model']} --cut {rows[0]['cut']} [--views N] "
               "(shape: known once exported, on first use)")


def activations_table(rows: list[dict]) -> str:
    """`featstore stats`: one row per activation set (embed --cut)."""
    return table([[r["act_id"], r["model"], r["cut"], " x ".join(map(str, r["shape"])), r["views"], r["items"],
                   f"{r['bytes'] / 1e6:.1f} MB", f"{r['bytes_per_item'] / 1e3:.1f} KB"] for r in rows],
                 ["activations", "model", "cut", "shape", "views", "items", "size", "per item"], "llllrrrr")


def print_cut_summary(c) -> None:
    """embed --cut: what the activation pass did."""
    shape = " x ".join(map(str, c.shape))
    click.echo(f"activations at {c.cut} ({shape}, fp16, {c.views} view{'s' if c.views > 1 else ''}; set "
               f"{c.act_id}): computed now {c.embedded}, already stored {c.already}, failed {c.failed}; "
               f"{c.bytes_per_item / 1e3:.1f} KB per item; {c.seconds:.1f} s"
               + (f" = {c.per_second:.1f} {c.unit}s/s" if c.embedded else ""))
    for path, reason in c.failures[:20]:
        click.echo(f"activations failed: {path}: {reason}")
