"""The embed command: parse its options into EmbedOptions, run the API's embed, print the summary."""
from __future__ import annotations

import click

from featstore.errors import FeatstoreError

from .common import json_option, log as _log, open_store as _open, store_option
from .output import emit_json, one_line, table


def _numbers(text: str) -> tuple:
    """--mean / --std: one or three numbers separated by commas."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise FeatstoreError(f"expected one or three numbers separated by commas, got {text!r}") from None


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--task", default=None, help="Task name for the labels [default: the folder's (or file's) name]")
@click.option("--model", default=None, help="Catalogue backbone name (NAME@SIZE: at another input size), or a path to your own .onnx [default: "
                                            "efficientnet-lite0 for images, all-minilm-l6-v2 for text]")
@click.option("--input-size", type=int, default=None,
              help="Square input size in pixels: needed with --model path.onnx; with a catalogue image backbone, run "
                   "it at this size instead of its own (same as --model NAME@SIZE; a set of its own).")
@click.option("--mean", default="127", help="With --model path.onnx: per-channel mean on 0..255 (one or three numbers).")
@click.option("--std", default="128", help="With --model path.onnx: per-channel std on 0..255 (one or three numbers).")
@click.option("--text-column", default="text", help="Text tables: the column holding the text.")
@click.option("--label-column", default=None, help="Text tables: a column of labels (becomes the task's labels) "
                                                    "[default: `label`, if the table has one].")
@click.option("--id-column", default=None, help="Text tables: a column of stable row ids [default: row number].")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="Images per backbone call [default: 32 on the CPU, 128 on CUDA; 64 texts].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: CUDA if this onnxruntime has it and a session starts on it, else the CPU. cuda: fail "
                   "unless the session really runs on CUDA.")
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32",
              help="int8: a graph quantised on a sample of this folder (CPU), its own embedding set. fp16: GPU.")
@click.option("--workers", type=click.IntRange(1, 4096), default=None,
              help="Local engine: decode threads [default: one per core]. Ray engine: actors, each with its own "
                   "ONNX Runtime session [default: 1].")
@click.option("--decode", type=click.Choice(["auto", "threads", "processes", "device"]), default="auto",
              help="Local engine: decode in threads; in processes writing into shared memory; or on the device "
                   "(nvImageCodec, from the gpu extra: JPEGs decoded and resized on the GPU, other files on the "
                   "cores) [auto: the fastest stage measured on this run's files (2,000 or more; the device only "
                   "on CUDA), remembered for this machine; else processes on a CUDA machine, threads otherwise].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="ray: run the embed stages shard by shard on Ray Data (needs the ray extra), then ingest.")
@click.option("--address", default=None, help="Ray engine: address of an existing Ray cluster [default: start a "
                                               "local one].")
@click.option("--shard-size", type=click.IntRange(1, 10**7), default=1000, help="Ray engine: files per shard.")
@click.option("--staging", type=click.Path(file_okay=False), default=None,
              help="Ray engine: folder for finished shards, seen by the driver and every worker [default: "
                   "STORE/staging].")
@click.option("--retry-failed", is_flag=True, help="Try again files that failed in an earlier run.")
@click.option("--wait", is_flag=True, help="If another process is writing the store, wait for it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--cut", default=None, help="Also store the activations at this cut point (fp16, for fine-tuning the "
                                          "layers above it; `featstore models cuts MODEL` lists them).")
@click.option("--views", type=int, default=1, help="With --cut: views per image: the plain one, then seeded "
                                                   "random resized crops + flips (images only).")
@click.option("--view-seed", type=int, default=0, help="With --cut --views N: the augmentation's seed.")
@store_option
@json_option
def embed(source, task, model, input_size, mean, std, text_column, label_column, id_column, batch_size, device,
          precision, workers, decode, engine, address, shard_size, staging, retry_failed, wait, no_progress,
          cut, views, view_seed, store_path, as_json):
    """Embed SOURCE into the store: a folder of images (recursively; subfolder names become labels), a manifest of
    images (CSV/TSV/Parquet with a `path` column, optional `label`), or text: a CSV/TSV, Parquet or JSON Lines
    file, or a folder of .txt files in class subfolders."""
    from featstore.api.options import EmbedOptions

    opts = EmbedOptions(model=model, task=task, input_size=input_size, mean=_numbers(mean), std=_numbers(std),
                        text_column=text_column, label_column=label_column, id_column=id_column,
                        batch_size=batch_size, device=device, precision=precision, workers=workers, decode=decode,
                        engine=engine, address=address, shard_size=shard_size, staging=staging,
                        retry_failed=retry_failed, wait=wait, progress=not no_progress and not as_json,
                        cut=cut, views=views, view_seed=view_seed)
    summary = _open(store_path).embed(source, options=opts, log=_log)
    if as_json:
        import dataclasses

        cut = ({"cut": dataclasses.asdict(summary.cut) | {"per_second": summary.cut.per_second}}
               if summary.cut is not None else {})
        return emit_json(summary.__dict__ | cut | {"images_per_second": summary.images_per_second,
                                             "items_per_second": summary.images_per_second})
    _print_embed_summary(summary, summary.labelled)
    if summary.cut is not None:
        from .cuts_cmd import print_cut_summary

        print_cut_summary(summary.cut)


def _print_embed_summary(s, n_labelled: int) -> None:
    what = "image files" if s.unit == "image" else "texts"
    click.echo(f"model {s.model} {s.precision} (set {s.set_id}) on {s.device}; {s.listed} {what} listed")
    if not s.listed:
        click.echo("no image files found (extensions: jpg jpeg png webp bmp tif tiff gif)" if s.unit == "image"
                   else "no texts found")
    rows = [["embedded now (backbone ran)", s.embedded], ["already stored, unchanged", s.already],
            ["copies of stored content (no backbone)", s.copies], ["failed", s.failed],
            ["failed earlier, unchanged (--retry-failed)", s.failed_before]]
    if s.removed:
        rows.append([f"removed (vanished from the {'folder' if s.unit == 'image' else 'source'})", s.removed])
    click.echo(table(rows, ["outcome", "files" if s.unit == "image" else "texts"], "lr"))
    unit = s.unit + "s"
    if s.embedded:
        click.echo(f"{s.embedded} {unit} in {s.seconds:.1f} s = {s.images_per_second:.1f} {unit}/s")
        click.echo(where_time_went(s))
    else:
        click.echo(f"backbone ran on 0 {unit}: nothing new to embed ({s.seconds:.1f} s)")
        if s.config.get("engine") == "ray":
            click.echo(where_time_went(s))
    if s.truncated:
        click.echo(f"truncated: {s.truncated} texts were longer than the model's token limit and were cut "
                   "(flagged in the store: texts.truncated)")
    if s.task:
        source = s.label_source or ("from subfolder names" if s.unit == "image" or not s.listed else "from the source")
        click.echo(f"labels: task {s.task!r} ({n_labelled} labelled {'files' if s.unit == 'image' else 'texts'}, "
                   f"{source})")
    for path in s.removed_paths[:20]:
        click.echo(f"removed: {path}")
    if s.removed > 20:
        click.echo(f"... and {s.removed - 20} more removed (--json lists them)")
    for path, reason in s.failures[:20]:
        click.echo(f"failed: {one_line(path)}: {one_line(reason)}")
    if len(s.failures) > 20:
        click.echo(f"... and {len(s.failures) - 20} more failures (featstore stats --json lists them)")


def where_time_went(s) -> str:
    """One line: the main thread's wall time by stage (they add up), then the overlapped stages beside it."""
    cfg = s.config
    if cfg.get("engine") == "ray":
        c = cfg["shards"]
        return (f"engine ray ({cfg['address']}, {cfg['workers']} actors): {c['shards']} shards of up to "
                f"{cfg['shard_size']} files; computed now {c['computed']}, staged by an earlier run "
                f"{c['staged_before']}, ingested before {c['ingested_before']}, unchanged {c['unchanged']}; "
                f"staging {cfg['staging']}")
    st = s.stage_seconds
    main = {k: v for k, v in st.items() if k == "inference" or k.startswith("waiting")}     # these add up
    side = {k: v for k, v in st.items() if k not in main}
    other = max(s.seconds - sum(main.values()), 0.0)
    parts = [f"{k} {v:.1f} s ({v / s.seconds:.0%})" for k, v in main.items()] + [f"other {other:.1f} s"]
    line = "where the time went: " + ", ".join(parts)
    if side:
        line += "; overlapped: " + ", ".join(f"{k} {v:.1f} s" for k, v in side.items())
    if cfg.get("batch_size"):
        workers = (f"{cfg['decode_workers']} decode {cfg.get('decode', 'threads')}, " if cfg.get("decode_workers")
                   else "")
        line += (f"\nsettings: batch {cfg['batch_size']}, {workers}{cfg.get('intra_op_threads', '-')} ONNX Runtime "
                 f"threads, precision {s.precision}, device {s.device}")
    if cfg.get("decode_note"):
        line += f"\ndecode: {cfg.get('decode')}, {cfg['decode_note']}"
    return line
