"""Benchmark: how good each backbone's features are on a labelled folder, through featstore's own paths.

    python benchmarks/quality.py [FOLDER] [--models efficientnet-lite0,efficientnet-lite1,efficientnet-lite2]
                                 [--out benchmarks/results] [-k 10] [--seeds 5]

Backbones are catalogue names (NAME@SIZE too) or models imported with `featstore models add` (e.g. a DINOv2 or CLIP
folder: --models efficientnet-lite0,dinov2-small). For every backbone, FOLDER (default ../shared/datasets/flowers, labels from its subfolders) is embedded with
`featstore embed --model M` into one fresh store, then:
1. Leave-one-out search: every stored image is a query (`search --id`, so itself is excluded) for its k nearest
   neighbours, through the set's FAISS index as `featstore search` runs it. Reported under three readings of "most
   of the k neighbours share its label": a strict majority (more than k/2), at least half, and the k-NN vote (its
   label is the most common among them, ties to the nearer), with top-1 and the strict figure per class.
2. Heads: every head kind fitted on the task's stored split (what `fit-head --head all` prints), and logistic
   regression (its C by cross-validation inside the training part) over --seeds more seeded stratified 80/20
   splits, mean and spread: one held-out split of 180 photos moves by about 2 points from split to split, so
   backbones are compared on the same splits (paired difference to the first backbone, with its standard error).
Targets: leave-one-out strict majority >= 0.85 with the default backbone; best head >= 0.90 with the
default backbone, higher with Lite2. Writes quality.json and quality.md.

    python benchmarks/quality.py --finetune [--datasets flowers,digits,bbc] [--settings JSON]

instead compares the finetune head with logreg on the same stored split (quality_finetune.py): flowers (Lite0), a
second image set shipped with scikit-learn (digits), and BBC News with MiniLM; writes quality_finetune.json/.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from heads import embed  # noqa: E402  (featstore embed FOLDER --model M, timed, as heads.py runs it)
DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"
DEFAULT_MODELS = "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2"


def agreement(label: str, neighbours: list[str]) -> dict:
    """The readings of 'most of the neighbours share the query's label' for one query."""
    same = sum(n == label for n in neighbours)
    counts = Counter(neighbours)
    top = max(counts.values())
    vote = next(n for n in neighbours if counts[n] == top)      # ties go to the label met first (the nearer)
    return {"strict": same > len(neighbours) / 2, "half": same >= len(neighbours) / 2, "vote": vote == label,
            "top1": neighbours[0] == label}


def leave_one_out(store, model: str, task: str, k: int) -> dict:
    from featstore.search.query import Query, search_many

    s = store.set_for_task(task, model)
    queries = store.con.execute(
        f"""SELECT min(i.item_id), min(l.label) FROM {s.table} e JOIN items i ON i.hash = e.hash AND i.status = 'ok'
            JOIN labels l ON l.path = i.path AND l.task = ? GROUP BY e.hash ORDER BY 1""", [task]).fetchall()
    t0 = time.perf_counter()
    found = search_many(store, [Query("id", item_id) for item_id, _ in queries], k=k, model=model, task=task)
    seconds = time.perf_counter() - t0
    rows = [(label, agreement(label, [r["label"] for r in f["results"]])) for (_, label), f in zip(queries, found)]
    out = {key: float(np.mean([a[key] for _, a in rows])) for key in ("strict", "half", "vote", "top1")}
    out["strict_per_class"] = {c: float(np.mean([a["strict"] for label, a in rows if label == c]))
                               for c in sorted({label for label, _ in rows})}
    out.update(queries=len(rows), k=k, queries_per_second=len(rows) / seconds)
    return out


def heads(store, model: str, task: str, seeds: int) -> dict:
    from sklearn.model_selection import StratifiedShuffleSplit

    from featstore.heads import CLASSIFIERS
    from featstore.heads.evaluate import TEST_FRACTION
    from featstore.heads.fit import TaskData, evaluate_head, load_task

    data = load_task(store, task, model)
    stored = {}
    for kind in CLASSIFIERS:
        _, rep = evaluate_head(data, kind)
        stored[kind] = rep["test_accuracy"]
    accs = []
    splits = StratifiedShuffleSplit(n_splits=seeds, test_size=TEST_FRACTION, random_state=0)
    for _, test_rows in splits.split(data.X, data.y):
        test = np.zeros(len(data.y), bool)
        test[test_rows] = True
        _, rep = evaluate_head(TaskData(data.eset, task, data.task_type, data.hashes, data.X, data.y, test), "logreg")
        accs.append(rep["test_accuracy"])
    best = max(stored, key=stored.get)
    return {"stored_split": stored, "best_head": best, "best_accuracy": stored[best],
            "logreg_seeded_mean": float(np.mean(accs)), "logreg_seeded_sd": float(np.std(accs)),
            "logreg_seeded": accs, "n_train": int((~data.test).sum()), "n_test": int(data.test.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated catalogue or imported names (first = baseline)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5, help="extra seeded splits for the logreg mean")
    ap.add_argument("--finetune", action="store_true",
                    help="instead: the finetune head against logreg (quality_finetune.py; writes quality_finetune.*)")
    ap.add_argument("--datasets", default="flowers,digits,bbc", help="with --finetune: flowers, digits, bbc")
    ap.add_argument("--bbc-per-class", type=int, default=0,
                    help="with --finetune: only the first N BBC articles of each class [default: all]")
    ap.add_argument("--settings", default=None, help="with --finetune: training settings as JSON, e.g. "
                                                     "'{\"top_lr_ratio\": 0.5}'")
    args = ap.parse_args()
    if args.finetune:
        from quality_finetune import run

        run(args)
        return
    from featstore.store.db import Store

    task = Path(args.folder).resolve().name
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    work = Path(tempfile.mkdtemp(prefix="featstore-quality-"))
    rows = []
    try:
        store_path = work / "store"
        for model in models:
            print(f"{model}: embedding ...", file=sys.stderr)
            seconds = embed(args.folder, store_path, model)
            with Store.open(store_path, write=True) as store:
                print(f"{model}: leave-one-out search, heads ...", file=sys.stderr)
                rows.append({"model": model, "embed_seconds": seconds,
                             "leave_one_out": leave_one_out(store, model, task, args.k),
                             "heads": heads(store, model, task, args.seeds)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    for r in rows:      # the same seeded splits for every backbone: the paired difference is the fair comparison
        diff = np.array(r["heads"]["logreg_seeded"]) - np.array(base["heads"]["logreg_seeded"])
        r["heads"]["logreg_seeded_vs_first"] = float(diff.mean())
        r["heads"]["logreg_seeded_vs_first_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    by = {r["model"]: r for r in rows}
    lite2 = by.get("efficientnet-lite2")
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "folder": args.folder, "task": task, "rows": rows,
        "targets": {
            "baseline": base["model"],
            "loo_strict_majority": base["leave_one_out"]["strict"],
            "loo_strict_majority_ge_0.85": base["leave_one_out"]["strict"] >= 0.85,
            "best_head_ge_0.90": base["heads"]["best_accuracy"] >= 0.90,
            "lite2_best_head_higher": None if lite2 is None else
            lite2["heads"]["best_accuracy"] > base["heads"]["best_accuracy"],
            "lite2_logreg_seeded_mean_higher": None if lite2 is None else
            lite2["heads"]["logreg_seeded_mean"] > base["heads"]["logreg_seeded_mean"],
            "lite2_logreg_seeded_vs_baseline_points": None if lite2 is None else
            100 * lite2["heads"]["logreg_seeded_vs_first"]},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    first = rows[0]["heads"]
    md = [f"# feature quality ({result['machine']})", "",
          f"{args.folder}: {rows[0]['leave_one_out']['queries']} images, task {task!r}; leave-one-out search with "
          f"k = {args.k} through the FAISS index; heads on the stored split ({first['n_train']} train / "
          f"{first['n_test']} held-out) and logreg over {args.seeds} more seeded splits.", "",
          "| backbone | LOO strict majority | at least half | k-NN vote | top-1 | best head (stored split) | "
          f"logreg, stored split | logreg, seeded splits | vs {rows[0]['model']}, paired | embed s |",
          "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lo, h = r["leave_one_out"], r["heads"]
        md.append(f"| {r['model']} | {pct(lo['strict'])} | {pct(lo['half'])} | {pct(lo['vote'])} | {pct(lo['top1'])} "
                  f"| {h['best_head']} {pct(h['best_accuracy'])} | {pct(h['stored_split']['logreg'])} | "
                  f"{pct(h['logreg_seeded_mean'])} ± {100 * h['logreg_seeded_sd']:.1f} | "
                  f"{100 * h['logreg_seeded_vs_first']:+.1f} ± {100 * h['logreg_seeded_vs_first_se']:.1f} | "
                  f"{r['embed_seconds']:.1f} |")
    classes = list(rows[0]["leave_one_out"]["strict_per_class"])
    md += ["", "Leave-one-out strict majority per class:", "",
           "| backbone | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    md += [f"| {r['model']} | " + " | ".join(pct(r["leave_one_out"]["strict_per_class"][c]) for c in classes) + " |"
           for r in rows]
    heads_all = list(rows[0]["heads"]["stored_split"])
    md += ["", "Every head on the stored split:", "", "| backbone | " + " | ".join(heads_all) + " |",
           "|---|" + "---:|" * len(heads_all)]
    md += [f"| {r['model']} | " + " | ".join(pct(r["heads"]["stored_split"][k]) for k in heads_all) + " |"
           for r in rows]
    md += ["", "targets: " + json.dumps(result["targets"])]
    (out / "quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
