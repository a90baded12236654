"""The index command group: build an embedding set's FAISS index of a chosen kind, tuned to a recall target."""
from __future__ import annotations

import click

from .common import json_option, log, store_option
from .common import open_store
from .output import emit_json


@click.group("index")
def index_group():
    """FAISS indexes: which kind, tuned how."""


@index_group.command("build")
@click.option("--kind", type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivf-sq8", "ivf-pq"]), default="auto",
              help="auto: the first of exact flat (up to 50,000 vectors), IVF-Flat, IVF-SQ8 and IVF-PQ (refined on "
                   "the stored vectors) that fits --memory.")
@click.option("--recall", type=click.FloatRange(0.5, 1.0), default=0.95,
              help="Target recall@10 against exact search; the search parameter is tuned until it is reached.")
@click.option("--memory", default=None, help="Memory budget for the index, e.g. 512MB: auto picks a kind that fits "
                                             "it, a --kind asked must fit it [default: 4GB for auto]")
@click.option("--model", default=None, help="Embedding set: model name or set id [default: the newest]")
@click.option("--wait", is_flag=True, help="If another process is writing the store, wait for it.")
@store_option
@json_option
def build(kind, recall, memory, model, wait, store_path, as_json):
    """(Re)build the index of an embedding set and record its kind, parameters and measured recall."""
    stamp = open_store(store_path).build_index(kind, recall, memory, model=model, wait=wait,
                                               log=(lambda _m: None) if as_json else log)
    if as_json:
        return emit_json(stamp)
    params = ", ".join(f"{k}={v}" for k, v in stamp.get("params", {}).items())
    quality = (f"recall@10 {stamp['recall_at_10']:.4f} measured on {stamp['tuned_on']} held-out stored vectors "
               f"(target {recall})" if stamp["tuned_on"] else "exact search")
    click.echo(f"{stamp['model']} (set {stamp['set_id']}): {stamp['kind']} index over {stamp['count']} vectors"
               + (f" ({params})" if params else "") + f"; {quality}; built in {stamp['build_seconds']:.1f} s, "
               f"{stamp['bytes'] / 1e6:.1f} MB")
    if stamp.get("target_reached") is False:
        click.echo(f"warning: recall target {recall} not reached: {stamp['recall_at_10']:.4f} at the largest "
                   f"search setting tried ({params}); --kind flat is exact", err=True)
