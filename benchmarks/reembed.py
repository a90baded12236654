"""Benchmark: what a second `featstore embed` of an unchanged folder costs, against the first (same run).

    python benchmarks/reembed.py [FOLDER] [--out benchmarks/results]

Measures, in one run on one machine, through the CLI as a user runs it (process start included) and through the
library (the embed call alone): the first embed of FOLDER into a fresh store, a second embed of the unchanged
folder, and an embed of a second folder holding copies of 100 of its files. Target (the store never loses
work): second embed <= 1/20 of the first; the copies add 100 paths and 0 new vectors.
Writes reembed.json and reembed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"


def cli(args, env) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "featstore.cli.main", *map(str, args), "--json", "--no-progress"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(p.stderr)
    return time.perf_counter() - t0, json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="featstore-bench-"))
    env = dict(os.environ, FEATSTORE_HOME=os.environ.get("FEATSTORE_HOME", str(work / "home")))
    store = work / "store"
    try:
        # export outside the timed runs: the benchmark is about the store, not the one-off ONNX export
        subprocess.run([sys.executable, "-c", "from featstore.catalog import resolve; from featstore.export import "
                        "ensure_exported; ensure_exported(resolve(None))"], env=env, check=True, capture_output=True)
        first_s, first = cli(["embed", args.folder, "--store", store], env)
        second_s, second = cli(["embed", args.folder, "--store", store], env)
        copies = work / "copies" / "some"
        copies.mkdir(parents=True)
        picked = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:100]
        for i, p in enumerate(picked):
            shutil.copy2(p, copies / f"{i:03d}-{p.name}")
        copy_s, copy = cli(["embed", copies.parent, "--store", store], env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "folder": args.folder, "files": first["listed"],
        "first": {"cli_seconds": first_s, "library_seconds": first["seconds"], "embedded": first["embedded"]},
        "second": {"cli_seconds": second_s, "library_seconds": second["seconds"], "embedded": second["embedded"]},
        "ratio_cli": second_s / first_s, "ratio_library": second["seconds"] / first["seconds"],
        "copies": {"paths": copy["listed"], "new_vectors": copy["embedded"], "copies": copy["copies"],
                   "cli_seconds": copy_s},
    }
    result["targets_met"] = {"second <= first/20 (cli)": result["ratio_cli"] <= 1 / 20,
                             "copies add 0 vectors": copy["embedded"] == 0 and copy["copies"] == len(picked)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reembed.json").write_text(json.dumps(result, indent=2))
    md = [f"# re-embed benchmark ({result['machine']})", "",
          f"{result['files']} files in `{args.folder}`", "",
          "| run | backbone ran on | CLI wall s | embed call s |", "|---|---:|---:|---:|",
          f"| first embed | {first['embedded']} | {first_s:.2f} | {first['seconds']:.2f} |",
          f"| second embed (unchanged) | {second['embedded']} | {second_s:.2f} | {second['seconds']:.3f} |",
          f"| 100 copies in a new folder | {copy['embedded']} | {copy_s:.2f} | {copy['seconds']:.3f} |", "",
          f"second/first: CLI {result['ratio_cli']:.3f} (1/{1 / result['ratio_cli']:.0f}), "
          f"embed call {result['ratio_library']:.4f} (1/{1 / result['ratio_library']:.0f}); "
          f"copies: {copy['listed']} paths added, {copy['embedded']} new vectors"]
    (out / "reembed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
