"""Benchmark: dataset audit from cached features, in one run.

    python benchmarks/audit.py [FOLDER] [--seeds 5] [--select-seeds 10] [--graph-n 1000000] [--skip-graph]
                               [--graph-result FILE] [--out benchmarks/results]

FOLDER (default ../shared/datasets/flowers, 900 photos, 5 classes) is embedded once with the default backbone
(efficientnet-lite0) into a fresh store. Then:
  * label issues: 5 % of the labels flipped to another class (seeded, --seeds draws). Precision and recall at
    the flipped count (the top-m items by each method's score, m = flipped items) and of the flagged set, for
    featstore (out-of-fold head probabilities + kNN label votes, confident learning), stock
    `cleanlab.filter.find_label_issues` on the same out-of-fold probabilities, and kNN-only (1 - the
    neighbours' vote for the given label);
  * select: the stored training part is the pool (labels hidden), N = 5, 10, 20 per class are picked by each
    strategy and by random (--select-seeds draws; `uncertain` labels a first half chosen by `diverse`, fits on
    it and picks the second half), a logistic-regression head is fitted on the picks and scored on the stored
    held-out part;
  * kNN graph at scale: benchmarks/audit_graph.py in a child process (--graph-n synthetic 1280-d vectors,
    build seconds, peak RSS, recall vs exact on 1,000 items); --graph-result reads a saved result of it.
Targets: planted label errors recall >= 0.8 at precision >= 0.8 and F1 >= cleanlab's; 1M graph peak RSS <= 6 GB,
recall >= 0.95; diverse or uncertain >= random + 3 points at 5 per class. Writes audit.json and audit.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from heads import embed  # noqa: E402  (featstore embed FOLDER, timed, as heads.py runs it)

DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"
FLIP = 0.05
SHOTS = (5, 10, 20)


def prf(picked, truth: set) -> dict:
    picked = set(int(i) for i in picked)
    tp = len(picked & truth)
    p = tp / len(picked) if picked else 0.0
    r = tp / len(truth) if truth else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "flagged": len(picked)}


def label_rows(data, graph, seeds: int) -> list[dict]:
    from cleanlab.filter import find_label_issues

    from featstore.apps import label_issues as li
    from featstore.apps.audit import neighbours_among

    graph_ids, nbr, cos, vec_ids = graph
    classes, y0 = np.unique(data.y, return_inverse=True)
    lab_nbr, lab_cos = neighbours_among(graph_ids, nbr, cos, vec_ids)
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        m = int(round(FLIP * len(y0)))
        flipped = rng.choice(len(y0), m, replace=False)
        yi = y0.copy()
        yi[flipped] = (yi[flipped] + rng.integers(1, len(classes), m)) % len(classes)
        truth = set(flipped.tolist())
        t0 = time.perf_counter()
        p_oof = li.out_of_fold_probs(data.X, yi, len(classes))
        oof_s = time.perf_counter() - t0
        p_knn = li.knn_label_probs(lab_nbr, lab_cos, yi, len(classes))
        t0 = time.perf_counter()
        flagged, score = li.ranked_issues(yi, li.combine(p_oof, p_knn))
        ours_s = time.perf_counter() - t0 + oof_s
        cl = find_label_issues(labels=yi, pred_probs=p_oof, return_indices_ranked_by="self_confidence")
        knn_score = 1 - p_knn[np.arange(len(yi)), yi]
        cl_score = 1 - p_oof[np.arange(len(yi)), yi]
        top = (lambda s: np.argsort(-s, kind="stable")[:m])
        rows.append({"seed": seed, "flipped": m,
                     "featstore_top_m": prf(top(score), truth), "featstore_flagged": prf(flagged, truth),
                     "cleanlab_top_m": prf(top(cl_score), truth), "cleanlab_flagged": prf(cl, truth),
                     "knn_top_m": prf(top(knn_score), truth), "featstore_seconds": ours_s})
    return rows


def select_rows(data, typicality_of, seeds: int) -> list[dict]:
    from featstore.apps import selection
    from featstore.heads.logreg import LogisticRegressionHead
    from featstore.store.index import normalise_rows

    X_tr, y_tr = data.train
    X_te, y_te = data.held_out
    U = normalise_rows(X_tr)
    n_classes = len(set(y_tr.tolist()))
    typ = typicality_of(np.flatnonzero(~data.test))

    def acc(picks):
        picks = np.asarray(picks)
        if len(set(y_tr[picks].tolist())) < 2:
            return float(np.mean(y_te == y_tr[picks][0]))
        return float(np.mean(LogisticRegressionHead().fit(X_tr[picks], y_tr[picks]).predict(X_te) == y_te))

    rows = []
    for shots in SHOTS:
        n = shots * n_classes
        runs = {"random": [], "diverse": [], "uncertain": [], "typical": []}
        for seed in range(seeds):
            runs["random"].append(acc(np.random.default_rng(seed).choice(len(y_tr), n, replace=False)))
            runs["diverse"].append(acc(selection.diverse(U, n, seed)))
            first = selection.diverse(U, n // 2, seed)
            rest = np.setdiff1d(np.arange(len(y_tr)), first)
            more, _ = selection.uncertain(U[rest], X_tr[first], y_tr[first], n - len(first))
            runs["uncertain"].append(acc(np.concatenate([first, rest[more]])))
        runs["typical"].append(acc(selection.typical(U, typ, n)))
        for name, accs in runs.items():
            a = np.asarray(accs)
            rows.append({"per_class": shots, "n": n, "strategy": name, "runs": len(a), "accuracy_mean": float(a.mean()),
                         "accuracy_std": float(a.std()), "accuracy_min": float(a.min()),
                         "accuracy_max": float(a.max())})
    return rows


def mean_of(rows, key, field):
    return float(np.mean([r[key][field] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--select-seeds", type=int, default=10)
    ap.add_argument("--graph-n", type=int, default=1_000_000)
    ap.add_argument("--skip-graph", action="store_true")
    ap.add_argument("--graph-result", default=None, help="JSON line printed by an earlier audit_graph.py run")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    from featstore.apps.audit import vec_ids_of
    from featstore.heads.fit import load_task
    from featstore.search import knn_graph
    from featstore.store.db import Store

    out = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}}
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "store"
        out["embed_seconds"] = embed(args.folder, store_path)
        with Store.open(store_path, write=True) as store:
            data = load_task(store, "flowers" if Path(args.folder).name == "flowers" else Path(args.folder).name)
            t0 = time.perf_counter()
            out["graph_small"] = knn_graph.graph(store, data.eset)
            out["graph_small"]["seconds"] = time.perf_counter() - t0
            graph_ids, nbr, cos = knn_graph.read_graph(store, data.eset)
            vec_ids = vec_ids_of(store, data.eset, data.hashes)
        row = {int(v): i for i, v in enumerate(graph_ids)}
        valid = np.isfinite(cos)
        mean_cos = np.where(valid, cos, 0).sum(1) / np.maximum(valid.sum(1), 1)
        out["labels"] = label_rows(data, (graph_ids, nbr, cos, vec_ids), args.seeds)
        out["select"] = select_rows(data, lambda pos: np.array([mean_cos[row[int(vec_ids[p])]] for p in pos]),
                                    args.select_seeds)
    if args.graph_result:
        out["graph_1m"] = json.loads(Path(args.graph_result).read_text().strip().splitlines()[-1])
    elif not args.skip_graph:
        res = subprocess.run([sys.executable, str(HERE / "audit_graph.py"), "--n", str(args.graph_n)],
                             capture_output=True, text=True, check=True)
        out["graph_1m"] = json.loads(res.stdout.strip().splitlines()[-1])
    out["summary"] = summary(out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "audit.json").write_text(json.dumps(out, indent=2))
    md = markdown(out)
    (Path(args.out) / "audit.md").write_text(md)
    print(md)


def summary(out: dict) -> dict:
    L = out["labels"]
    s = {k: {f: mean_of(L, k, f) for f in ("precision", "recall", "f1")}
         for k in ("featstore_top_m", "featstore_flagged", "cleanlab_top_m", "cleanlab_flagged", "knn_top_m")}
    five = {r["strategy"]: r["accuracy_mean"] for r in out["select"] if r["per_class"] == 5}
    s["targets"] = {
        "labels_recall_0.8_at_precision_0.8": s["featstore_top_m"]["recall"] >= 0.8
        and s["featstore_top_m"]["precision"] >= 0.8,
        "labels_f1_at_least_cleanlab": s["featstore_top_m"]["f1"] >= s["cleanlab_top_m"]["f1"]
        and s["featstore_flagged"]["f1"] >= s["cleanlab_flagged"]["f1"],
        "select_beats_random_by_3_points_at_5": max(five["diverse"], five["uncertain"]) - five["random"] >= 0.03}
    g = out.get("graph_1m")
    if g:
        s["targets"]["graph_peak_rss_le_6gb"] = g["peak_rss_gb"] <= 6
        s["targets"]["graph_recall_ge_0.95"] = g["graph_recall"] >= 0.95
    return s


def markdown(out: dict) -> str:
    s = out["summary"]
    lines = ["# audit benchmark", "", f"Label issues ({len(out['labels'])} seeds, {FLIP:.0%} flipped, "
             f"{out['labels'][0]['flipped']} items each): mean over seeds", "",
             "| method | precision | recall | F1 |", "|---|---|---|---|"]
    for k, name in (("featstore_top_m", "featstore, top m"), ("featstore_flagged", "featstore, flagged set"),
                    ("cleanlab_top_m", "cleanlab OOF only, top m"),
                    ("cleanlab_flagged", "cleanlab find_label_issues, flagged set"), ("knn_top_m", "kNN only, top m")):
        lines.append(f"| {name} | {s[k]['precision']:.3f} | {s[k]['recall']:.3f} | {s[k]['f1']:.3f} |")
    lines += ["", "Select (held-out accuracy of a logreg head on the picks; mean ± std over seeds)", "",
              "| per class | random | diverse | uncertain | typical |", "|---|---|---|---|---|"]
    for shots in SHOTS:
        r = {x["strategy"]: x for x in out["select"] if x["per_class"] == shots}
        lines.append(f"| {shots} | " + " | ".join(f"{r[k]['accuracy_mean']:.3f} ± {r[k]['accuracy_std']:.3f}"
                                                  for k in ("random", "diverse", "uncertain", "typical")) + " |")
    g = out.get("graph_1m")
    if g:
        lines += ["", f"kNN graph, {g['n']:,} x {g['dim']} synthetic, k {g['k']}: index {g['index']} "
                  f"{g['index_params']} built in {g['index_seconds']:.0f} s, graph in {g['graph_seconds']:.0f} s "
                  f"({g['rows']:,} rows), recall vs exact {g['graph_recall']:.3f} on {g['recall_sample']} items, "
                  f"peak RSS {g['peak_rss_gb']:.2f} GB"]
    lines += ["", "targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["targets"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
