"""`featstore` command: models list, embed, fit-head, search, predict, heads, stats, verify, gc (and, beside,
duplicates, audit, select, index)."""
from __future__ import annotations

import csv
import sys

import click

from featstore.errors import FeatstoreError, is_disk_full

from .common import json_option, log as _log, open_store as _open, store_option
from .output import emit_json, one_line, table


class FeatstoreGroup(click.Group):
    """Turns library errors into one clear line (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FeatstoreError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; everything written before now is kept in the store") from None
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            raise click.ClickException(f"out of disk space ({str(exc).splitlines()[0]}); everything committed before "
                                       "is kept in the store: free some space and run the same command again") from None



@click.group(cls=FeatstoreGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="featstore")
@click.option("--verbose", "-v", is_flag=True, help="Also show the libraries' own log lines (faiss, Ray).")
@click.option("--store", "store_path", type=click.Path(), default=None,
              help="Store folder for the command that follows (as its own --store) [default: $FEATSTORE_STORE or "
                   "./.featstore]")
def cli(verbose, store_path):
    """Embed datasets once with frozen pretrained backbones; fit heads and search on the cached features."""
    from featstore.logs import set_verbose

    set_verbose(verbose)


# ---- models ---------------------------------------------------------------------------------------------------
@cli.group()
def models():
    """The backbone catalogue."""


@models.command("list")
@click.option("--long", "long_", is_flag=True, help="Also show each backbone's preprocessing.")
@json_option
def models_list(long_, as_json):
    """The backbones, built-in and imported: name, modality, dim, input, licence, exported?, source."""
    import featstore

    rows = featstore.backbones()
    if as_json:
        return emit_json(rows)
    _models_table(rows, long_)
    click.echo("* default backbone; an image backbone at another input size: --model NAME@SIZE (e.g. "
               "efficientnet-lite0@320); add a Hugging Face model: featstore models add FOLDER|hf:ORG/NAME")


def _models_table(rows: list[dict], long_: bool) -> None:
    cells = [[r["name"] + (" *" if r["default"] else ""), r["modality"], r["dim"], r["input"], r["licence"],
              "yes" if r["exported"] else "no", r["source"] or "-"] for r in rows]
    click.echo(table(cells, ["name", "modality", "dim", "input", "licence", "exported", "source"], "llrllll"))
    if long_:
        for r in rows:
            pair = f" (dual encoder with {r['partner']})" if r["partner"] else ""
            click.echo(f"{r['name']}{pair}: {r['preprocessing']}")


@models.command("add")
@click.argument("source")
@click.option("--name", default=None, help="Name of the entry [default: the folder's or model's name].")
@click.option("--pooling", type=click.Choice(["cls", "mean", "pooler"]), default=None,
              help="Which output is the vector [default: by model type; a sentence-transformers folder's own].")
@click.option("--modality", type=click.Choice(["image", "text"]), default=None,
              help="Image or text model [default: from the model type; a different one is refused].")
@click.option("--force", is_flag=True, help="Replace an imported model of the same name.")
@json_option
def models_add(source, name, pooling, modality, force, as_json):
    """Import a Hugging Face model: SOURCE is a local folder (save_pretrained or a hub snapshot) or hf:ORG/NAME
    (the HF cache; the hub only when the network is there). It is exported to ONNX, checked against torch on
    real photos or sentences, and added to the catalogue (a dual encoder such as CLIP as NAME and NAME-text).
    The supported model types are listed in docs/backbones.md."""
    import featstore

    rows = featstore.add_model(source, name=name, pooling=pooling, modality=modality, force=force,
                               log=(lambda _m: None) if as_json else _log)
    if as_json:
        return emit_json(rows)
    _models_table(rows, True)
    click.echo(f"added {', '.join(r['name'] for r in rows)}: use --model NAME with embed, search and fit-head")


@models.command("remove")
@click.argument("name")
@json_option
def models_remove(name, as_json):
    """Remove an imported model (a dual encoder: both towers): its catalogue entry and exported ONNX files.
    Stores embedded with it keep their vectors."""
    import featstore

    out = featstore.remove_model(name)
    if as_json:
        return emit_json(out)
    click.echo(f"removed {', '.join(out['removed'])} ({len(out['files'])} files); stores embedded with it keep "
               "their vectors")


# ---- search ---------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--like", type=click.Path(), default=None,
              help="Query image file (not added to the store); a folder: every image in it is a query.")
@click.option("--id", "item_id", default=None, help="Query by stored item id (itself excluded); several: 3,17,42.")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A batch of queries: CSV with a 'path', 'id' or 'text' column.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per (query, neighbour).")
@click.option("--text", "text", default=None, help="Query text, ranked against stored texts (not added to the store).")
@click.option("--vector-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Ready-made query vectors: a .npy file of one vector or a 2-D array of them (the set: --model, "
                   "else the newest of that dimension).")
@click.option("--where", default=None, help="SQL condition on the stored items, e.g. \"label = 'roses' AND width > "
                                             "300\" (columns: item_id path hash size mtime width height label split "
                                             "text, and the store's metadata columns: `featstore meta`). k results "
                                             "whenever k items pass.")
@click.option("-k", type=click.IntRange(1, 10000), default=10, help="How many neighbours.")
@click.option("--model", default=None, help="Embedding set: model name or set id [default: the newest]")
@click.option("--task", default=None, help="Whose labels to show and --where reads [default: the store's only task]")
@store_option
@json_option
def search(like, item_id, queries, as_csv, text, vector_file, where, k, model, task, store_path, as_json):
    """Nearest neighbours by cosine similarity: path, label, score (one query, or a batch)."""
    found = _open(store_path).search(like=like, ids=item_id, text=text, queries=queries, k=k, model=model, task=task,
                                     where=where, vector=_vectors(vector_file) if vector_file else None)
    outs = found if isinstance(found, list) else [found]
    for note in dict.fromkeys(out["note"] for out in outs if out["note"]):
        _log(note)
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["query", "rank", "score", "item_id", "path", "label"])
        for out in outs:
            for r in out["results"]:
                w.writerow([out["query"], r["rank"], r["score"], r["item_id"], r["path"], r["label"]])
        return
    if as_json:
        return emit_json(found if not isinstance(found, list) else {"queries": outs})
    for out in outs:
        _print_neighbours(out)


def _vectors(path: str):
    """The query vectors in a .npy file (no pickled objects), or one line saying why not."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FeatstoreError(f"{path}: not a .npy array of numbers ({str(exc).splitlines()[0]})") from None


def _print_neighbours(out: dict) -> None:
    passing = f"; {out['passing']} items pass --where" if out["passing"] is not None else ""
    query = repr(out["query"]) if out.get("query_kind") == "text" else out["query"]
    click.echo(f"{len(out['results'])} nearest to {query} ({out['model']}, cosine similarity{passing})")
    labelled = out["task"] is not None or any(r["label"] for r in out["results"])   # no task chosen: no label column
    rows = [[r["rank"], f"{r['score']:.4f}"] + ([r["label"] or "-"] if labelled else []) + [r["item_id"], r["path"]]
            for r in out["results"]]
    headers = ["rank", "score"] + ([out["task"] or "label"] if labelled else []) + ["id", "path"]
    if any(r.get("text") for r in out["results"]):
        for row, r in zip(rows, out["results"]):
            row.append(_snippet(r.get("text")))
        headers.append("text")
    click.echo(table(rows, headers, "rr" + ("l" if labelled else "") + "rll"))


def _snippet(text: str | None, width: int = 70) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


# ---- predict --------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--head", "head_name", required=True, help="Stored head name (see `featstore heads`).")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--no-progress", is_flag=True)
@click.option("--add", is_flag=True, help="Also store the new files (unlabelled), so a later predict or search "
                                          "uses their vectors [default: the store is left as it was].")
@store_option
@json_option
def predict(head_name, files, as_csv, no_progress, add, store_path, as_json):
    """Label and probability for each file; the store is not changed unless --add. A file that cannot be used
    (missing, unreadable, corrupt) is a row with status failed and the reason; exit code 1 when no file could be
    predicted."""
    out = _open(store_path).predict(head_name, list(files), progress=not (no_progress or as_json or as_csv),
                                    add=add)
    rows = out["predictions"]
    _print_predictions(out, rows, as_json, as_csv)
    if not any(r["status"] == "ok" for r in rows):
        raise click.ClickException("no file could be predicted (each row says why)")


def _print_predictions(out, rows, as_json, as_csv) -> None:
    if as_json:
        return emit_json(out)
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["path", "label", "probability", "value", "status", "error"])
        for r in rows:
            w.writerow([r["path"], r["label"], r["probability"], r.get("value"), r["status"], r["error"]])
        return
    if out["task_type"] == "regression":
        click.echo(table([["-" if r.get("value") is None else f"{r['value']:.4g}",
                           r["path"] + (f"  (failed: {r['error']})" if r["status"] != "ok" else "")] for r in rows],
                         ["prediction", "path"], "rl"))
    else:
        click.echo(table([[r["label"] or "-", "-" if r["probability"] is None else f"{r['probability']:.3f}",
                           r["path"] + (f"  (failed: {r['error']})" if r["status"] != "ok" else "")] for r in rows],
                         ["label", "probability", "path"], "lrl"))
    failed = sum(r["status"] != "ok" for r in rows)
    click.echo(f"{len(rows) - failed} predicted, {failed} failed; head {out['head']!r} (task {out['task']!r}, "
               f"{out['model']}); backbone ran on {out['embedded_now']} new files")


# ---- stats --------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--verbose", "-v", "list_all", is_flag=True,
              help="List every duplicate group and failed item (without it: counts and a few examples).")
@store_option
@json_option
def stats(list_all, store_path, as_json):
    """What the store holds: items by status, duplicates, embedding sets, tasks, heads."""
    out = _open(store_path).stats()
    if as_json:
        return emit_json(out)
    click.echo(f"store {out['store']} (schema {out['schema_version']})")
    click.echo("items: " + (", ".join(f"{n} {k}" for k, n in out["items"].items()) or "none")
               + f"; {out['distinct_contents']} distinct contents, {out['duplicate_paths']} duplicate paths")
    click.echo("tasks: " + (", ".join(f"{t} ({n} labels)" for t, n in out["tasks"].items()) or "none"))
    cur = out.get("curation") or {}
    if cur.get("edits") or cur.get("tags") or cur.get("excluded"):
        click.echo(f"curation: {cur['edits']} edits, {cur['excluded']} items excluded from fitting; tags: "
                   + (", ".join(f"{one_line(t)} ({n})" for t, n in list(cur["tags"].items())[:10]) or "none")
                   + (f" and {len(cur['tags']) - 10} more" if len(cur["tags"]) > 10 else ""))
    _print_duplicates(out["duplicates"], None if list_all else 3)
    for f in out["failed"] if list_all else out["failed"][:10]:
        click.echo(f"failed: {one_line(f['path'])}: {one_line(f['error'])}")
    if len(out["failed"]) > 10 and not list_all:
        click.echo(f"... {len(out['failed']) - 10} more failed items (stats --verbose lists all)")
    click.echo("")
    click.echo(table([[s["set_id"], s["model"], s["dim"], s["precision"], s["provider"], s["vectors"],
                       s["live_vectors"], f"{s['bytes'] / 1e6:.1f} MB",
                       (s["index"] or {}).get("count", "-"), _index_text(s["index"])] for s in out["embedding_sets"]],
                     ["set", "model", "dim", "precision", "provider", "vectors", "live", "size", "indexed", "index"],
                     "lllllrrrrl") if out["embedding_sets"] else "embedding sets: none yet")
    if out.get("activation_sets"):
        click.echo("")
        click.echo(activations_table(out["activation_sets"]))
    if out["heads"]:
        click.echo("")
        click.echo(heads_table(out["heads"]))
    if out["last_runs"]:
        click.echo("")
        click.echo(table([[r["run_id"], r["started_at"][:19], r["set_id"], r["config"].get("precision", "-"),
                           r["config"].get("device", "-"), r["config"].get("batch_size", "-"),
                           r["config"].get("intra_op_threads", "-"), r["summary"]["embedded"],
                           f"{r['summary']['seconds']:.1f}", f"{r['summary']['items_per_second']:.1f}"]
                          for r in out["last_runs"]],
                         ["run", "started", "set", "precision", "device", "batch", "threads", "embedded", "s",
                          "items/s"], "rlllllrrrr"))


def _print_duplicates(groups: list[dict], show: int | None) -> None:
    """Contents stored at several paths: a count, then `show` groups as examples (None: every group)."""
    if not groups:
        return
    extra = sum(len(g["paths"]) - 1 for g in groups)
    click.echo(f"duplicates: {len(groups)} contents stored at more than one path ({extra} extra paths)"
               + (", e.g.:" if show is not None and len(groups) > show else ":"))
    for group in groups[:show]:
        click.echo(f"  same content at {len(group['paths'])} paths: " + ", ".join(map(one_line, group["paths"])))
    if show is not None and len(groups) > show:
        click.echo(f"  ... {len(groups) - show} more (stats --verbose lists all, --json too)")


def _index_text(stamp: dict | None) -> str:
    if not stamp:
        return "-"
    kind = {"flat-ip": "flat"}.get(stamp.get("kind"), stamp.get("kind", "flat"))
    params = ",".join(f"{k}={v}" for k, v in (stamp.get("params") or {}).items())
    recall = f" recall@10 {stamp['recall_at_10']:.3f}" if "recall_at_10" in stamp and kind != "flat" else ""
    short = f" (below the {stamp['target_recall']} target)" if stamp.get("target_reached") is False else ""
    return kind + (f" ({params})" if params else "") + recall + short


@cli.command()
@click.option("--rehash", is_flag=True, help="Also re-read every stored file and report what changed or vanished.")
@store_option
@json_option
def verify(rehash, store_path, as_json):
    """Check the store: finite vectors, unique keys, FAISS in step with DuckDB, files unchanged (--rehash)."""
    out = _open(store_path).verify(rehash=rehash)
    if as_json:
        emit_json(out)
    else:
        click.echo(table([[s["set_id"], s["model"], s["vectors"], s["non_finite"], s["live"],
                           "-" if s["indexed"] is None else s["indexed"], s["index"]] for s in out["sets"]],
                         ["set", "model", "vectors", "non-finite", "live", "indexed", "index"], "llrrrrl"))
        for a in out.get("activation_sets", []):
            click.echo(f"activations {a['act_id']} ({a['model']}, {a['cut']}): {a['items']} contents; missing "
                       f"views {a['incomplete']}, wrong size {a['bad_size']}, non-finite {a['non_finite']}")
        for d in out.get("duplicate_keys", []):
            click.echo(f"stored {d['rows']} times in {d['table']}: {d['key']}")
        if rehash:
            f = out["files"]
            click.echo(f"files: {f['checked']} checked, {len(f['changed'])} changed, {len(f['vanished'])} vanished")
            for p in f["changed"]:
                click.echo(f"changed: {p}")
            for p in f["vanished"]:
                click.echo(f"vanished: {p}")
        click.echo("ok" if out["ok"] else "problems found")
    if not out["ok"]:
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
@store_option
@json_option
def gc(dry_run, store_path, as_json):
    """Remove removed items (vanished from their folder), superseded vectors and old embedding sets (not the newest
    of their model, used by no head)."""
    out = _open(store_path).gc(dry_run=dry_run)
    if as_json:
        return emit_json(out)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(out['removed_sets'])} old embedding sets"
               + "".join(f"\n  {s['set_id']} ({s['model']})" for s in out["removed_sets"]))
    click.echo(f"{verb} {len(out['removed_items'])} removed items (vanished from their folder or table)"
               + "".join(f"\n  {p}" for p in out["removed_items"][:20])
               + (f"\n  ... and {len(out['removed_items']) - 20} more (--json lists all)"
                  if len(out["removed_items"]) > 20 else ""))
    click.echo(f"{verb} {sum(out['removed_vectors'].values())} superseded vectors"
               + (f" and {out['removed_texts']} stored texts" if out["removed_texts"] else ""))
    acts = sum(out.get("removed_activations", {}).values())
    if acts or out.get("removed_activation_sets"):
        click.echo(f"{verb} {len(out['removed_activation_sets'])} activation sets of old embedding sets and the "
                   f"activations of {acts} contents no item holds")


from .audit_cmd import audit, select  # noqa: E402  (commands defined beside, registered here)
from .curate_cmd import exclude, history, include, tag, undo  # noqa: E402
from .duplicates import duplicates  # noqa: E402
from .embed_cmd import embed  # noqa: E402
from .cuts_cmd import activations_table, models_cuts  # noqa: E402
from .heads import export, heads_table, fit_head, heads, label, meta  # noqa: E402
from .index_cmd import index_group  # noqa: E402
from .serve_cmd import serve  # noqa: E402
from .rank_cmd import rank  # noqa: E402

for _command in (embed, fit_head, heads, label, meta, export, duplicates, audit, select, index_group, serve, rank):
    cli.add_command(_command)
for _command in (tag, exclude, include, undo, history):
    cli.add_command(_command)
models.add_command(models_cuts)


def main():
    cli(prog_name="featstore")


if __name__ == "__main__":
    main()
