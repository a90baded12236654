"""Head commands: fit-head (one head, a leaderboard, or a few-shot curve), heads, label, meta, export."""
from __future__ import annotations

import click

from .common import json_option, log, store_option
from .common import open_store
from .curate_cmd import chosen_items, label_edit
from .output import emit_json, pct, table


def _shots(value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,2,5,10, got {value!r}") from None


@click.command("fit-head")
@click.option("--task", default=None, help="Task whose labels to learn [default: the store's only task].")
@click.option("--kind", default=None,
              help="Head kind: logreg (default), svm, ridge, knn, linear, mlp (numeric targets: ridge, mlp), "
                   "finetune (the layers above a cut + a linear layer, on activations stored by `embed --cut`), "
                   "'all' for a leaderboard, or 'zero-shot' (from --prompts; no labels used to fit).")
@click.option("--head", "old_kind", default=None, hidden=True, help="The former spelling of --kind.")
@click.option("--model", default=None, help="Embedding set to use: model name or set id [default: the newest]")
@click.option("--name", default=None, help="Name to store the head under [default: the task; with --kind all, "
                                           "TASK-KIND]")
@click.option("--force", is_flag=True, help="Replace a stored head of the same name (refused without it).")
@click.option("--C", "C", type=float, default=None,
              help="logreg only: a fixed inverse regularisation strength instead of choosing it by CV.")
@click.option("--target", type=click.Choice(["auto", "class", "numeric"]), default="auto",
              help="Labels are classes or numbers (auto: numeric when all labels are numbers with more than "
                   "10 distinct values).")
@click.option("--shots", default=None, help="Few-shot learning curve instead of one head: examples per class, "
                                            "e.g. 1,2,5,10,20.")
@click.option("--seeds", type=click.IntRange(1, 100), default=None, help="With --shots: draws per point [default: 5].")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a figure (.png, .svg or .pdf, by the file's extension): the held-out confusion matrix "
                   "(with --kind all: the best head's), the few-shot curve with --shots, or predicted vs actual "
                   "for a numeric target. Needs matplotlib: pip install 'featstore[plots]'.")
@click.option("--plot-normalize", is_flag=True,
              help="With --plot: divide each row of the confusion matrix by its total (shares of the true class; "
                   "the diagonal is each class's recall) instead of counts.")
@click.option("--prompts", default=None,
              help="With --kind zero-shot: prompt templates, comma-separated, each with {label} (averaged per "
                   "class) [default: 'a photo of a {label}.' for images, '{label}' for text].")
@click.option("--cut", default=None, help="With --kind finetune: the cut whose stored activations to tune on "
                                          "[default: the newest of the embedding set].")
@store_option
@json_option
def fit_head(task, kind, old_kind, model, name, force, C, target, shots, seeds, plot, plot_normalize, prompts,
             cut, store_path, as_json):
    """Fit a head on cached features (the backbone is not run) and report metrics on the task's stored
    held-out split."""
    kind = _kind(kind, old_kind)
    shot_list = _shots(shots)
    out = open_store(store_path).fit_head(task, head=kind, model=model, name=name, C=C, target=target,
                                          shots=shot_list, seeds=seeds, plot=plot, plot_normalize=plot_normalize,
                                          prompts=prompts, force=force, cut=cut,
                                          log=(lambda _msg: None) if as_json else log)
    if as_json:
        return emit_json(out)
    if shot_list:
        _print_curve(out)
    elif kind == "all":
        _print_leaderboard(out)
    else:
        _print_head(out)
    if plot:
        click.echo(f"plot written to {plot}")


def _kind(kind, old_kind):
    """The head kind from --kind, or from its former spelling --head (with a note on stderr)."""
    if old_kind is None:
        return kind or "logreg"
    if kind is not None:
        raise click.UsageError("give the head kind once, as --kind (--head is its former spelling)")
    click.echo(f"note: fit-head --head is now --kind (--kind {old_kind})", err=True)
    return old_kind


def _print_head(out):
    m = out["metrics"]
    kind_desc = out["kind"] + (f", C={out['params']['params'].get('C')}" if out["params"]["params"].get("C") else "")
    click.echo(f"head {out['name']!r} ({kind_desc}) for task {out['task']!r} on {out['model']} "
               f"{out.get('precision', 'fp32')} features: "
               f"{out['n_items']} distinct items" + (f", {len(out['classes'])} classes" if out["classes"] else
                                                     ", numeric target"))
    if out["kind"] == "zero-shot":
        click.echo(f"no labels used to fit: prompts {', '.join(map(repr, m['prompts']))} embedded by {m['text_model']}; "
                   f"scored on the {m['n_test']} held-out items of the stored split (all labelled items: "
                   f"{pct(m['all_items_accuracy'])})")
    else:
        click.echo(f"split: {m['n_train']} train / {m['n_test']} held-out (stored; stratified, seed {m['seed']})")
    cv = m["cv"] or {}
    if cv.get("param"):
        how = cv.get("method") or (f"{cv['folds']}-fold CV" if cv.get("folds") and cv.get("cv_accuracy")
                                   and "cv" not in cv else cv.get("cv", "validation part"))   # heads before 0.2
        acc = f" (CV accuracy {pct(cv['accuracy_mean'])})" if cv.get("accuracy_mean") is not None else ""
        if how == "fixed":
            click.echo(f"{cv['param']} fixed at {cv['chosen']:g} (given, not searched)")
        else:
            click.echo(f"{cv['param']} chosen on the training part by {how}: {cv['chosen']:g}{acc}")
    speed = f"fit {m['fit_seconds']:.2f} s, {m['predictions_per_second']:,.0f} predictions/s"
    if out["task_type"] == "regression":
        click.echo(f"held-out R^2 {m['test_r2']:.3f}, MAE {m['test_mae']:.4g}, RMSE {m['test_rmse']:.4g} ({speed})")
        return
    click.echo(f"held-out accuracy {pct(m['test_accuracy'])}, balanced accuracy {pct(m['test_balanced_accuracy'])}, "
               f"macro-F1 {pct(m['test_macro_f1'])} ({speed})")
    _print_precision_check(m.get("precision_check"), out.get("precision", "fp32"))
    click.echo("")
    click.echo(table([[c, pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), v["support"]]
                      for c, v in m["per_class"].items()], ["class", "precision", "recall", "f1", "support"], "lrrrr"))
    click.echo("")
    labels = m["confusion"]["labels"]
    click.echo("confusion matrix (rows: true, columns: predicted)")
    click.echo(table([[lab] + row for lab, row in zip(labels, m["confusion"]["matrix"])], ["true \\ pred"] + labels,
                     "l" + "r" * len(labels)))


def _print_precision_check(check, precision):
    if precision == "fp32":
        return
    if not check:
        click.echo(f"precision {precision}: no fp32 vectors of this model for the task to compare with (embed the "
                   "same folder with --precision fp32 to measure what the precision costs)")
        return
    click.echo(f"precision {precision} vs fp32, same head kind and held-out split: {check['metric']} "
               f"{pct(check['value'])} vs {pct(check['fp32_value'])} ({check['delta_points']:+.1f} points)")


def _print_leaderboard(out):
    click.echo(f"task {out['task']!r} on {out['model']} features: {out['n_train']} train / {out['n_test']} "
               f"held-out (stored split); every head scored on the same held-out items")
    metric = out["rows"][0]["metric"] if out["rows"] else "accuracy"
    level = f"{out.get('ci_level', 0.95):.0%}"

    def score(v):
        return "-" if v is None else pct(v) if metric == "accuracy" else f"{v:.3f}"

    click.echo(table([[i + 1, r["head"], r["kind"], score(r["value"]),
                       "-" if r.get("ci_low") is None else f"{score(r['ci_low'])} - {score(r['ci_high'])}",
                       f"{r['fit_seconds']:.2f}", f"{r['predictions_per_second']:,.0f}",
                       ", ".join(f"{k}={v:g}" for k, v in r["chosen"].items() if k)]
                      for i, r in enumerate(out["rows"])],
                     ["#", "head", "kind", f"held-out {metric}", f"{level} interval", "fit s", "predictions/s",
                      "chosen"], "rllrrrrl"))
    method = {"wilson": f"Wilson score interval on the {out['n_test']} held-out items",
              "bootstrap": f"bootstrap over the {out['n_test']} held-out items"}.get(
        (out["rows"][0].get("ci_method") if out["rows"] else None), "")
    if method:
        click.echo(f"interval: {method}")
    if out.get("verdict"):
        click.echo(out["verdict"]["statement"])


def _print_curve(out):
    click.echo(f"few-shot learning curve for task {out['task']!r} ({out['kind']} on {out['model']} features): "
               f"accuracy on the {out['n_test']} stored held-out items, {out['seeds']} draws per point "
               f"(chance {pct(out['chance'])})")
    click.echo(table([[r["shots"], r["runs"], pct(r["accuracy_mean"]), f"± {100 * r['accuracy_std']:.1f}",
                       pct(r["accuracy_min"]), pct(r["accuracy_max"])
                       + (" (capped: a class has fewer)" if r["capped_by_class_size"] else "")]
                      for r in out["rows"]], ["shots/class", "runs", "accuracy", "spread", "min", "max"], "rrrrrl"))


def heads_table(rows: list[dict]) -> str:
    return table([[r["name"], r["kind"], r["task"], r["set_id"],
                   (pct(r["value"]) if r["metric"] == "accuracy" else f"R^2 {r['value']:.3f}") if r["value"] is not None
                   else "-", r["n_train"] or "-",
                   ", ".join(f"{k}={v:g}" for k, v in r["chosen"].items() if k and v is not None),
                   r["created_at"][:19]] for r in rows],
                 ["head", "kind", "task", "embedding set", "held-out", "trained on", "chosen", "created"], "llllrrll")


@click.group(invoke_without_command=True)
@store_option
@json_option
@click.pass_context
def heads(ctx, store_path, as_json):
    """The heads stored in the store (`heads remove NAME` deletes one)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = open_store(store_path).heads()
    if as_json:
        return emit_json(rows)
    click.echo(heads_table(rows) if rows else "no heads yet (featstore fit-head --task TASK)")


@heads.command("remove")
@click.argument("name")
@store_option
@json_option
@click.pass_context
def remove_head(ctx, name, store_path, as_json):
    """Delete a stored head (its fused ONNX exports, if any, are files of yours and stay)."""
    out = open_store(store_path or ctx.parent.params.get("store_path")).remove_head(name)
    if as_json:
        return emit_json(out)
    click.echo(f"removed head {out['name']!r} ({out['kind']}, task {out['task']!r})")


@click.command()
@click.option("--task", required=True, help="Task to label (created if new).")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with a header: a 'path' or 'hash' column and a 'label' column.")
@click.option("--set", "set_label", default=None, help="Give the items chosen (PATHS, --ids or --where) this label.")
@click.option("--unset", is_flag=True, help="Remove the chosen items' label in the task.")
@click.option("--accept", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Accept the suggested labels of the label issues in this CSV (from `featstore audit --csv`).")
@click.option("--only", default=None, help="With --accept: only these item ids, e.g. 3,17,42.")
@chosen_items
@store_option
@json_option
def label(task, csv_path, set_label, unset, accept, only, paths, ids, where, store_path, as_json):
    """Attach labels for a task from a CSV (by file path or content hash), so one dataset carries many tasks; or
    set, remove or accept suggested labels on chosen items (each such change an edit: `featstore undo`)."""
    if csv_path is None:
        return label_edit(task, paths, ids, where, set_label, unset, accept, only, store_path, as_json)
    if set_label is not None or unset or accept is not None or only is not None or paths or ids or where:
        raise click.UsageError("--csv takes its labels from the file alone")
    out = open_store(store_path).label(task, csv_path)
    if as_json:
        return emit_json(out)
    click.echo(f"task {task!r}: {out['labelled_paths']} paths labelled from {out['rows']} rows "
               f"({out['distinct_labels']} distinct labels): {out['new']} new, {out['changed']} changed, "
               f"{out['unchanged']} unchanged")
    if out.get("edit_id"):
        click.echo(f"edit {out['edit_id']}; undo: featstore undo --edit {out['edit_id']}")
    for row in out["unmatched"][:10]:
        click.echo(f"not in the store: line {row['line']}: {row['key']}")
    if len(out["unmatched"]) > 10:
        click.echo(f"... {len(out['unmatched']) - 10} more rows not in the store (--json lists all)")


@click.command()
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Table (CSV, TSV, Parquet, JSONL) with a 'path' column; every other column is metadata.")
@store_option
@json_option
def meta(csv_path, store_path, as_json):
    """Attach metadata to stored items by path: typed columns that --where filters on and results show."""
    out = open_store(store_path).meta(csv_path)
    if as_json:
        return emit_json(out)
    columns = ", ".join(f"{c} ({t}{', new' if c in out['new_columns'] else ''})" for c, t in out["columns"].items())
    click.echo(f"metadata for {out['matched_paths']} paths from {out['rows']} rows: {columns or 'no columns'}; "
               f"{len(out['unmatched'])} rows not matched")
    for row in out["unmatched"][:10]:
        click.echo(f"not in the store: row {row['row']}: {row['path']}" + ("" if row["path"] else " (empty path)"))
    if len(out["unmatched"]) > 10:
        click.echo(f"... {len(out['unmatched']) - 10} more rows not matched (--json lists all)")


@click.command()
@click.option("--head", "head_name", required=True, help="Stored head to fuse with its backbone.")
@click.argument("output", type=click.Path(dir_okay=False))
@store_option
@json_option
def export(head_name, output, store_path, as_json):
    """Write one ONNX model: image tensor in, class probabilities out (backbone and head fused)."""
    out = open_store(store_path).export(head_name, output)
    if as_json:
        return emit_json(out)
    click.echo(f"wrote {out['path']} ({out['bytes'] / 1e6:.1f} MB): input {out['input']} "
               f"{out['input_shape']}, output {out['output']} over {len(out['outputs'])} "
               f"{'classes' if out['task_type'] == 'classification' else 'target'}")
    click.echo(f"checked against backbone + head on {out['checked_on']}: max |difference| "
               f"{out['max_abs_diff']:.2e}")
    click.echo(f"preprocessing (also in the model's metadata): {out['preprocess_text']}")
