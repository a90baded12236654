"""Benchmark: `featstore embed --engine ray` against the local engine, and a driver killed mid-run.

    python benchmarks/ray_engine.py [FOLDER] [--shard-size 100] [--workers 1] [--out DIR]

In one run on FOLDER (default ../shared/datasets/flowers), each as a user runs it (`featstore embed ...` in a
fresh process, the ONNX export done before the clock):
1. the local engine into a fresh store;
2. the Ray engine (a local Ray started by the command) into a fresh store: wall time, the ray/local ratio, and the
   check that both stores hold the same vectors (max abs difference) and the same item records and labels;
3. the Ray engine again into a fresh store, its driver killed (SIGKILL) once a few shards are staged; then the
   same command rerun: how many shards it recomputed (from its output), and the final store compared with (2).
Writes ray_engine.json and ray_engine.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"


def featstore(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featstore.cli.main", *map(str, args)], capture_output=True,
                          text=True, **kw)


def timed_embed(folder: Path, store: Path, *extra) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = featstore("embed", folder, "--store", store, "--no-progress", "--json", "--device", "cpu", *extra)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return time.perf_counter() - t0, json.loads(p.stdout)


def contents(store: Path):
    import duckdb

    con = duckdb.connect(str(store / "store.duckdb"), read_only=True)
    try:
        table = con.execute("SELECT table_name FROM embedding_sets").fetchone()[0]
        vectors = {h: np.asarray(v, np.float32) for h, v in con.execute(f"SELECT hash, vector FROM {table}").fetchall()}
        items = sorted(con.execute("SELECT path, hash, size, mtime, width, height, status, error FROM items").fetchall())
        labels = sorted(con.execute("SELECT task, path, label FROM labels").fetchall())
    finally:
        con.close()
    return vectors, items, labels


def compare(a: Path, b: Path) -> dict:
    va, ia, la = contents(a)
    vb, ib, lb = contents(b)
    same_keys = va.keys() == vb.keys()
    diff = max((float(np.abs(va[h] - vb[h]).max()) for h in va), default=0.0) if same_keys else None
    return {"vectors": len(va), "same_contents": same_keys, "max_abs_diff": diff, "same_items": ia == ib,
            "same_labels": la == lb}


def killed_run(folder: Path, store: Path, shard_size: int, workers: int, after: int) -> dict:
    """Start the Ray engine, SIGKILL the driver once `after` shards are staged, rerun, parse what was redone."""
    cmd = [sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store", str(store), "--engine",
           "ray", "--shard-size", str(shard_size), "--workers", str(workers), "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=False)
    staging = store / "staging"
    while proc.poll() is None and len(list(staging.glob("*/*.parquet"))) < after:
        time.sleep(0.05)
    staged_at_kill = len(list(staging.glob("*/*.parquet")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)  # its Ray
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    rerun = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    line = next(x for x in p.stderr.splitlines() + p.stdout.splitlines() if x.startswith("engine ray"))
    first = next(x for x in p.stderr.splitlines() if "shards of up to" in x)
    return {"staged_at_kill": staged_at_kill, "rerun_seconds": rerun, "rerun_plan": first, "rerun_summary": line}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()

    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported

    ensure_exported(resolve(None), log=lambda *_: None)
    folder = Path(args.folder)
    work = Path(tempfile.mkdtemp(prefix="fs-ray-"))
    try:
        print("local engine ...", file=sys.stderr)
        t_local, out_local = timed_embed(folder, work / "local")
        print("ray engine ...", file=sys.stderr)
        t_ray, out_ray = timed_embed(folder, work / "ray", "--engine", "ray", "--shard-size", args.shard_size,
                                     "--workers", args.workers)
        same = compare(work / "local", work / "ray")
        print("ray engine, driver killed mid-run, then rerun ...", file=sys.stderr)
        kill = killed_run(folder, work / "killed", args.shard_size, args.workers, after=3)
        kill["final_vs_uninterrupted"] = compare(work / "ray", work / "killed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores", "folder": str(folder),
              "shard_size": args.shard_size, "workers": args.workers,
              "local": {"seconds": t_local, "embedded": out_local["embedded"]},
              "ray": {"seconds": t_ray, "embedded": out_ray["embedded"], "shards": out_ray["config"]["shards"]},
              "ray_over_local": t_ray / t_local, "same_results": same, "killed": kill}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_engine.json").write_text(json.dumps(result, indent=2))
    md = [f"# Ray engine vs local engine ({result['machine']})", "",
          "| engine | images | s (whole command) | ratio |", "|---|---|---|---|",
          f"| local | {out_local['embedded']} | {t_local:.1f} | 1.00 |",
          f"| ray ({args.workers} actor, shards of {args.shard_size}) | {out_ray['embedded']} | {t_ray:.1f} | "
          f"{t_ray / t_local:.2f} |", "",
          f"same results: {json.dumps(same)}", "",
          f"killed driver after {kill['staged_at_kill']} staged shards; rerun ({kill['rerun_seconds']:.1f} s): "
          f"{kill['rerun_plan']}", "", f"final store vs uninterrupted: {json.dumps(kill['final_vs_uninterrupted'])}"]
    (out / "ray_engine.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
