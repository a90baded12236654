"""Benchmark: what cached cut activations cost to make and what they save per fine-tuning epoch.

    python benchmarks/cuts.py [FOLDER] [--images 200] [--views 4] [--cut last-block] [--out DIR]

In one run, same machine, same weights (EfficientNet-Lite0), on the first --images photos of FOLDER (default
../shared/datasets/flowers, copied to a temporary folder):
1. cost: `embed` into a fresh store, against `embed --cut CUT --views V` into another (pooled pass + activation
   pass), as a ratio; the activation set's bytes per image;
2. saving: one fine-tuning epoch over every view (forward + backward + SGD step of the layers above the cut and a
   linear head, batch 32), from the stored fp16 activations (read from the store, as a fine-tuning head would),
   against the tutorial loop over the same images (PIL decode + preprocess each epoch, the layers below the cut
   run under no_grad, the same layers above trained), as a ratio.
Target: the cached epoch >= 3x faster than the tutorial's (the layers below the cut hold most of the network's
compute). Records the CPU model and SIMD flags. Writes cuts.json/.md under --out (default benchmarks/results).
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
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from heads import cpu_flags  # noqa: E402
from tutorial import load as tutorial_load  # noqa: E402

DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"
MODEL = "efficientnet-lite0"
BATCH = 32


def subset(folder: Path, n: int, into: Path) -> list[tuple[Path, str]]:
    """The first n photos of FOLDER (round-robin over its class folders) copied into `into`: (path, label)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    lists = [sorted(c.glob("*.jpg")) for c in classes]
    out = []
    for i in range(max(map(len, lists))):
        for c, files in zip(classes, lists):
            if i < len(files) and len(out) < n:
                (into / c.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(files[i], into / c.name / files[i].name)
                out.append((into / c.name / files[i].name, c.name))
    return out


def timed_embed(folder: Path, store: Path, **opts) -> tuple[float, object]:
    import featstore

    t0 = time.perf_counter()
    summary = featstore.open(store).embed(folder, progress=False, log=lambda *_: None, **opts)
    return time.perf_counter() - t0, summary


def train_epoch(top, head, batches) -> float:
    """One epoch of SGD on (x, y) batches through top + head; returns its seconds."""
    import torch

    params = [p for p in top.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    top.train()
    t0 = time.perf_counter()
    for x, y in batches():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(top(x)), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--cut", default="last-block")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    import torch

    from featstore.models.catalog import resolve
    from featstore.models.cut_lite import split
    from featstore.models.torch_backbones import load_classifier
    from featstore.store.activations import activation_stats, find_activation_set, read_activations
    from featstore.store.db import Store

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="featstore-cuts-bench-"))
    try:
        files = subset(Path(args.folder), args.images, work / "photos")
        classes = sorted({lab for _, lab in files})
        t_plain, _ = timed_embed(work / "photos", work / "plain")
        t_cut, summary = timed_embed(work / "photos", work / "cut", cut=args.cut, views=args.views)
        with Store.open(work / "cut") as st:
            aset = find_activation_set(st, MODEL, args.cut)
            size = next(r for r in activation_stats(st) if r["act_id"] == aset.act_id)
            labels = dict(st.con.execute("SELECT i.hash, l.label FROM items i JOIN labels l ON l.path = i.path "
                                         "WHERE i.status = 'ok'").fetchall())
            hashes = sorted(labels)
            t0 = time.perf_counter()
            acts = read_activations(st, aset, hashes)["x"]
            t_read = time.perf_counter() - t0
        y_all = torch.tensor([classes.index(labels[h]) for h in hashes])

        def cached_batches():
            x = acts.reshape((-1,) + acts.shape[2:])                      # every view of every image
            y = y_all.repeat_interleave(acts.shape[1])
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
            for i in range(0, len(x), BATCH):
                idx = order[i:i + BATCH].numpy()
                yield torch.from_numpy(x[idx].astype(np.float32)), y[idx]

        spec = resolve(MODEL)
        bottom, top = split(load_classifier(spec), args.cut)
        head = torch.nn.Linear(spec.dim, len(classes))
        t_cached = train_epoch(top, head, cached_batches)
        size_px = int(spec.input["size"])
        paths = [p for p, _ in files]
        y_files = torch.tensor([classes.index(lab) for _, lab in files])

        def tutorial_batches():
            for _ in range(args.views):                                   # as many samples as the cached epoch
                for i in range(0, len(paths), BATCH):
                    x = torch.stack([tutorial_load(p, size_px) for p in paths[i:i + BATCH]])
                    with torch.no_grad():
                        x = bottom(x)
                    yield x, y_files[i:i + BATCH]

        bottom2, top2 = split(load_classifier(spec), args.cut)
        bottom = bottom2.eval()
        t_tutorial = train_epoch(top2, torch.nn.Linear(spec.dim, len(classes)), tutorial_batches)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(files)
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores", "cpu": cpu_flags(),
              "model": MODEL, "cut": args.cut, "views": args.views, "images": n,
              "embed_seconds": round(t_plain, 2), "embed_cut_seconds": round(t_cut, 2),
              "embed_cut_ratio": round(t_cut / t_plain, 2), "bytes_per_image": size["bytes_per_item"],
              "activation_pass_seconds": round(summary.cut.seconds, 2), "read_all_views_seconds": round(t_read, 2),
              "epoch_cached_seconds": round(t_cached, 2), "epoch_tutorial_seconds": round(t_tutorial, 2),
              "epoch_speedup": round(t_tutorial / t_cached, 2), "target_epoch_speedup": 3.0,
              "met": t_tutorial / t_cached >= 3.0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuts.json").write_text(json.dumps(result, indent=2))
    md = [f"# cut activations ({result['machine']}; {result['cpu']})", "",
          f"{MODEL}, cut {args.cut}, {args.views} views, {n} flowers photos", "",
          "| | seconds | ratio |", "|---|---|---|",
          f"| embed | {t_plain:.1f} | 1 |",
          f"| embed --cut {args.cut} --views {args.views} | {t_cut:.1f} | {t_cut / t_plain:.2f} |",
          f"| fine-tuning epoch, tutorial loop (decode + layers below the cut every epoch) | {t_tutorial:.1f} | 1 |",
          f"| fine-tuning epoch from cached activations (read {t_read:.2f} s once) | {t_cached:.1f} | "
          f"{t_tutorial / t_cached:.1f}x faster |", "",
          f"activations: {size['bytes_per_item'] / 1e3:.1f} KB per image (fp16, {args.views} views); "
          f"target epoch speed-up >= 3x: {'met' if result['met'] else 'NOT met'}"]
    (out / "cuts.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
