"""Benchmark: featstore beside LanceDB (the embedded vector store users compare it with), same data, one run.

    python benchmarks/search_lancedb.py [--n 200000] [--dim 256] [--queries 500] [--rounds 2]
                                        [--datasets clustered,hard] [--kinds auto,ivf-sq8,ivf-pq]
                                        [--out benchmarks/results]
    python benchmarks/search_lancedb.py --ingest-only [--reps 5] [--dim 1280] [--datasets clustered]

Needs the `bench` extra (lancedb). Data sets (seeded, L2-normalised, each vector with an int `bucket` uniform in
0..9999 and a `category`):
  clustered  2,000 clusters (more clusters than inverted lists: neighbours sit in few lists)
  hard       16 broad clusters (far fewer clusters than lists: neighbours spread over many lists, probing matters)
Queries are held out (drawn from the same distribution, not stored); k = 10; recall@10 against exact numpy truth
(cosine), filtered recall against the exact top 10 among the vectors passing the filter.

featstore, as a user would: the vectors written into a real store through Store.write_batch in batches of 50,000
(item rows given as columns; item path /synthetic/b{bucket:05d}/{i}.jpg, the bucket also in `width`, the category
as a label of task 'category'), `featstore.open(root).build_index(kind="auto", recall=0.95)`, then one
`search_many(store, [Query("vector", v)], k=10, model=..., where="width < 1000", indexes=indexes)` per query on
the store opened read-only, one `indexes` dict kept across queries.
LanceDB: `create_table` from a pyarrow table (vector fixed_size_list<float32>, bucket, category), an IVF_PQ index
(cosine, num_partitions = round(sqrt(N)), num_sub_vectors = D/16) and a BTREE scalar index on bucket, nprobes tuned
on separate held-out vectors to recall@10 >= 0.95 with refine_factor 20 (what featstore's build does for its own
nprobe); filtered queries: .where("bucket < 1000", prefilter=True) with the tuned nprobes as minimum and no maximum
(LanceDB probes further when a narrow filter leaves too few results).

featstore's compressed index kinds (--kinds; `build_index(kind=...)` on the same store, one after another) are
queried like its `auto` pick and reported in a table of their own beside LanceDB's index.
--ingest-only times just the ingest of both systems, --reps alternating runs each in fresh child processes (wall
and CPU seconds, medians, the ratio), into search_lancedb_ingest_<dim>.{json,md}.

Each system's ingest+build runs in one child process and its query phase in another (peak RSS = the query child's
ru_maxrss). Query phases alternate featstore/LanceDB for --rounds rounds; latencies are medians over rounds of
per-round p50/p99. The first query of each condition (index load, filter evaluation) is reported apart, not in p50.
Writes search_lancedb.json and search_lancedb.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
K = 10
SELECTIVITIES = ((0.5, 5000), (0.1, 1000), (0.01, 100), (0.001, 10))      # share, bucket bound
DATASETS = {"clustered": {"clusters": 2000, "noise": 0.7}, "hard": {"clusters": 16, "noise": 1.0}}
TARGET = 0.95
REFINE = 20
N_TUNE = 200


# ---- data and truth (parent) -------------------------------------------------------------------------------
def make_data(name: str, n: int, dim: int, n_queries: int, seed: int = 0):
    cfg = DATASETS[name]
    rng = np.random.default_rng((seed, list(DATASETS).index(name)))
    centres = rng.standard_normal((cfg["clusters"], dim), dtype=np.float32)
    total = n + n_queries + N_TUNE
    x = np.empty((total, dim), np.float32)
    for start in range(0, total, 50_000):
        m = min(50_000, total - start)
        block = centres[rng.integers(0, cfg["clusters"], m)] + cfg["noise"] * rng.standard_normal((m, dim),
                                                                                                   dtype=np.float32)
        x[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    bucket = rng.integers(0, 10_000, n).astype(np.int32)
    category = rng.integers(0, 20, n).astype(np.int32)
    return x[:n], x[n:n + n_queries], x[n + n_queries:], bucket, category


def exact_truth(data: np.ndarray, queries: np.ndarray, bucket: np.ndarray) -> dict:
    """Exact top K (row indices into data) unfiltered and per bucket bound."""
    out = {"all": np.empty((len(queries), K), np.int64)} | {b: np.empty((len(queries), K), np.int64)
                                                          for _, b in SELECTIVITIES}
    masks = {b: bucket < b for _, b in SELECTIVITIES}
    for start in range(0, len(queries), 100):
        scores = queries[start:start + 100] @ data.T
        rows = slice(start, start + len(scores))
        out["all"][rows] = topk(scores)
        for b, mask in masks.items():
            s = np.where(mask[None, :], scores, -np.inf)
            out[b][rows] = topk(s)
    return out


def topk(scores: np.ndarray) -> np.ndarray:
    part = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth)]))


# ---- child helpers --------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: KiB


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def timed(run, queries: np.ndarray) -> tuple[list[float], list[list[int]], float]:
    """(latencies ms of queries 2.., found ids of all, first-query ms): query 1 is the cold one."""
    lat, found, first = [], [], math.nan
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        ids = run(q)
        ms = (time.perf_counter() - t0) * 1e3
        if i == 0:
            first = ms
        else:
            lat.append(ms)
        found.append(ids)
    return lat, found, first


# ---- featstore ------------------------------------------------------------------------------------------------
def fs_set(dim: int):
    import dataclasses

    from featstore.embed.backbones import set_for
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported

    spec = resolve(None)
    real = set_for(spec, Path(ensure_exported(spec, log=lambda *_: None)), "cpu")
    return dataclasses.replace(real, set_id=f"synthetic{dim}", dim=dim, table=f"vectors_synthetic{dim}")


def fs_ingest(work: Path, root: Path, dim: int) -> tuple[float, float]:
    """Write the vectors, item rows and labels into a new store at `root`, as a user would; (seconds, CPU
    seconds of this process) taken."""
    from featstore.store.db import Store

    data = np.load(work / "data.npy", mmap_mode="r")
    bucket, category = np.load(work / "bucket.npy"), np.load(work / "category.npy")
    n = len(data)
    s = fs_set(dim)                    # the backbone's set record (export cached), dimension replaced: not timed
    t0, cpu0 = time.perf_counter(), time.process_time()
    with Store.open(root, write=True, create=True) as st:
        st.ensure_set(s)
        paths = [f"/synthetic/b{b:05d}/{i}.jpg" for i, b in enumerate(bucket.tolist())]
        for start in range(0, n, 50_000):
            part = slice(start, min(start + 50_000, n))
            hashes = [f"{i:032x}" for i in range(part.start, part.stop)]
            m = len(hashes)
            items = {"path": paths[part], "hash": hashes, "size": np.ones(m, np.int64), "mtime": np.zeros(m),
                     "width": bucket[part], "height": np.ones(m, np.int32), "status": ["ok"] * m}
            st.write_batch(s, items, hashes, np.asarray(data[part]))
        st.set_labels("category", dict(zip(paths, [f"cat{c:02d}" for c in category.tolist()])))
    return time.perf_counter() - t0, time.process_time() - cpu0


def fs_build(work: Path, kind: str = "auto") -> dict:
    import featstore

    dim = np.load(work / "data.npy", mmap_mode="r").shape[1]
    root = work / "featstore"
    ingest = None
    if not root.exists():
        ingest = fs_ingest(work, root, dim)[0]
    t0 = time.perf_counter()
    stamp = featstore.open(root).build_index(kind=kind, recall=TARGET)
    build = time.perf_counter() - t0
    index_file = root / "index" / f"synthetic{dim}.faiss"
    return {"ingest_s": ingest, "build_s": build, "index_bytes": index_file.stat().st_size,
            "disk_bytes": dir_bytes(root), "build_peak_rss_mb": peak_rss_mb(),
            "index": {k: stamp.get(k) for k in ("kind", "params", "recall_at_10", "target_reached")}}


def fs_query(work: Path) -> dict:
    from featstore.search.query import Query, search_many
    from featstore.store.cached import CachedStore as Store

    queries = np.load(work / "queries.npy")
    dim = queries.shape[1]
    path_re = re.compile(r"/(\d+)\.jpg$")
    out = {}
    with Store.open(work / "featstore") as store:
        model = f"synthetic{dim}"
        indexes: dict = {}
        out["rss_before_mb"] = rss_now_mb()

        def runner(where):
            def run(q):
                res = search_many(store, [Query("vector", q)], k=K, model=model, where=where, indexes=indexes)[0]
                return [int(path_re.search(r["path"]).group(1)) for r in res["results"]]
            return run

        for name, where in [("all", None)] + [(str(b), f"width < {b}") for _, b in SELECTIVITIES]:
            lat, found, first = timed(runner(where), queries)
            out[name] = {"lat_ms": lat, "found": found, "first_ms": first}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# ---- LanceDB --------------------------------------------------------------------------------------------------
def lance_table(work: Path):
    import lancedb

    return lancedb.connect(str(work / "lancedb")).open_table("vectors")


def lance_ingest(work: Path, root: Path):
    """create_table from Arrow at `root`, as LanceDB's docs show; (table, seconds, CPU seconds taken)."""
    import lancedb
    import pyarrow as pa

    data = np.load(work / "data.npy", mmap_mode="r")
    bucket, category = np.load(work / "bucket.npy"), np.load(work / "category.npy")
    n, dim = data.shape
    t0, cpu0 = time.perf_counter(), time.process_time()
    flat = pa.array(np.ascontiguousarray(data).reshape(-1), pa.float32())
    table = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                      "bucket": pa.array(bucket), "category": pa.array([f"cat{c:02d}" for c in category])})
    db = lancedb.connect(str(root))
    tbl = db.create_table("vectors", table)
    return tbl, time.perf_counter() - t0, time.process_time() - cpu0


def lance_build(work: Path) -> dict:
    data = np.load(work / "data.npy", mmap_mode="r")
    n, dim = data.shape
    tbl, ingest, _ = lance_ingest(work, work / "lancedb")
    partitions = int(round(math.sqrt(n)))
    t0 = time.perf_counter()
    tbl.create_index(metric="cosine", num_partitions=partitions, num_sub_vectors=dim // 16, index_type="IVF_PQ")
    vector_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    tbl.create_scalar_index("bucket", index_type="BTREE")
    scalar_index = time.perf_counter() - t0
    # nprobes: the smallest on the ladder whose recall@10 on held-out vectors (not the benchmark's queries)
    # reaches the target, as featstore tunes its own nprobe at build
    tune, tune_truth = np.load(work / "tune.npy"), np.load(work / "tune_truth.npy")
    t0 = time.perf_counter()
    nprobes, got = partitions, math.nan
    for p in (8, 16, 32, 64, 128, 256, partitions):
        found = [tbl.search(q).distance_type("cosine").nprobes(p).refine_factor(REFINE).limit(K)
                 .select(["id", "_distance"]).to_arrow()["id"].to_pylist() for q in tune]
        got = recall(found, tune_truth)
        if got >= TARGET or p >= partitions:
            nprobes = p
            break
    tuning = time.perf_counter() - t0
    idx = work / "lancedb" / "vectors.lance" / "_indices"
    return {"ingest_s": ingest, "build_s": vector_index + scalar_index, "vector_index_s": vector_index,
            "scalar_index_s": scalar_index, "tune_s": tuning, "index_bytes": dir_bytes(idx),
            "disk_bytes": dir_bytes(work / "lancedb"), "build_peak_rss_mb": peak_rss_mb(),
            "index": {"kind": "IVF_PQ", "num_partitions": partitions, "num_sub_vectors": dim // 16,
                      "nprobes": nprobes, "refine_factor": REFINE, "tune_recall_at_10": got}}


def lance_query(work: Path) -> dict:
    nprobes = json.loads((work / "lance_build.json").read_text())["index"]["nprobes"]
    queries = np.load(work / "queries.npy")
    tbl = lance_table(work)
    out = {"rss_before_mb": rss_now_mb()}

    def runner(where):
        def run(q):
            b = tbl.search(q).distance_type("cosine").refine_factor(REFINE).limit(K).select(["id", "_distance"])
            if where is None:
                b = b.nprobes(nprobes)
            else:
                b = b.where(where, prefilter=True).minimum_nprobes(nprobes).maximum_nprobes(0)
            return b.to_arrow()["id"].to_pylist()
        return run

    for name, where in [("all", None)] + [(str(b), f"bucket < {b}") for _, b in SELECTIVITIES]:
        lat, found, first = timed(runner(where), queries)
        out[name] = {"lat_ms": lat, "found": found, "first_ms": first}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def ingest_only(work: Path, system: str) -> dict:
    """One ingest into a fresh folder, then its size on disk; the folder is removed."""
    root = work / f"ingest-{system}"
    shutil.rmtree(root, ignore_errors=True)
    if system == "featstore":
        seconds, cpu = fs_ingest(work, root, np.load(work / "data.npy", mmap_mode="r").shape[1])
    else:
        seconds, cpu = lance_ingest(work, root)[1:]
    out = {"ingest_s": seconds, "cpu_s": cpu, "disk_bytes": dir_bytes(root)}
    shutil.rmtree(root, ignore_errors=True)
    return out


CHILD = {"featstore-build": fs_build, "featstore-query": fs_query, "lancedb-build": lance_build,
         "lancedb-query": lance_query, "featstore-ingest": lambda w: ingest_only(w, "featstore"),
         "lancedb-ingest": lambda w: ingest_only(w, "lancedb")}


def child(what: str, work: Path, kind: str = "auto") -> dict:
    out = work / f"{what}.out.json"
    t0 = time.perf_counter()
    env = os.environ | {"LANCE_LOG": "error", "RUST_LOG": "error"}    # not lance's per-query deprecation notice
    subprocess.run([sys.executable, __file__, "--child", what, "--work", str(work), "--child-out", str(out),
                    "--kind", kind], check=True, env=env)
    print(f"    {what}{'' if kind == 'auto' else ' ' + kind}: {time.perf_counter() - t0:.1f} s", flush=True)
    return json.loads(out.read_text())


# ---- parent ---------------------------------------------------------------------------------------------------
def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else math.nan


def summarise(rounds: list[dict], truth: dict) -> dict:
    """Per condition: median over rounds of p50 and p99, recall (the same each round, from round 1), first ms."""
    out = {}
    for name in ["all"] + [str(b) for _, b in SELECTIVITIES]:
        t = truth["all" if name == "all" else int(name)]
        out[name] = {"p50_ms": float(np.median([pct(r[name]["lat_ms"], 50) for r in rounds])),
                     "p99_ms": float(np.median([pct(r[name]["lat_ms"], 99) for r in rounds])),
                     "p50_ms_rounds": [pct(r[name]["lat_ms"], 50) for r in rounds],
                     "recall_at_10": recall(rounds[0][name]["found"], t),
                     "first_ms": float(np.median([r[name]["first_ms"] for r in rounds]))}
    out["peak_rss_mb"] = float(np.median([r["peak_rss_mb"] for r in rounds]))
    out["rss_before_queries_mb"] = float(np.median([r["rss_before_mb"] for r in rounds]))
    return out


def run_dataset(name: str, args, base: Path) -> dict:
    work = base / name
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    data, queries, tune, bucket, category = make_data(name, args.n, args.dim, args.queries)
    truth = exact_truth(data, queries, bucket)
    tune_truth = exact_truth(data, tune, bucket)["all"]
    for f, a in (("data", data), ("queries", queries), ("tune", tune), ("tune_truth", tune_truth),
                 ("bucket", bucket), ("category", category)):
        np.save(work / f"{f}.npy", a)
    shares = {str(b): float(np.mean(bucket < b)) for _, b in SELECTIVITIES}
    del data
    print(f"  {name}: data + exact truth {time.perf_counter() - t0:.1f} s", flush=True)
    build = {"featstore": child("featstore-build", work), "lancedb": child("lancedb-build", work)}
    (work / "lance_build.json").write_text(json.dumps(build["lancedb"]))
    rounds = {"featstore": [], "lancedb": []}
    for r in range(args.rounds):
        order = ("featstore", "lancedb") if r % 2 == 0 else ("lancedb", "featstore")
        for system in order:
            rounds[system].append(child(f"{system}-query", work))
    result = {"shares": shares}
    for system in ("featstore", "lancedb"):
        result[system] = build[system] | {"query": summarise(rounds[system], truth)}
    result["featstore_kinds"] = {}
    for kind in [k for k in args.kinds.split(",") if k and k != "auto"]:      # the compressed kinds: same store
        built = child("featstore-build", work, kind)
        result["featstore_kinds"][kind] = built | {"query": summarise(
            [child("featstore-query", work) for _ in range(args.rounds)], truth)}
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_ingest(name: str, args, base: Path) -> dict:
    """--ingest-only: both systems' ingest of the same data, alternating, --reps times each, in fresh child
    processes; medians and the ratio."""
    work = base / name
    work.mkdir(parents=True)
    data, _, _, bucket, category = make_data(name, args.n, args.dim, 0)
    for f, a in (("data", data), ("bucket", bucket), ("category", category)):
        np.save(work / f"{f}.npy", a)
    del data
    reps = {"featstore": [], "lancedb": []}
    for r in range(args.reps):
        for system in (("featstore", "lancedb") if r % 2 == 0 else ("lancedb", "featstore")):
            reps[system].append(child(f"{system}-ingest", work))
    shutil.rmtree(work, ignore_errors=True)
    out = {}
    for system, runs in reps.items():
        out[system] = {"ingest_s": float(np.median([x["ingest_s"] for x in runs])),
                       "cpu_s": float(np.median([x["cpu_s"] for x in runs])),
                       "disk_bytes": runs[0]["disk_bytes"], "runs": runs}
    out["ratio"] = out["featstore"]["ingest_s"] / out["lancedb"]["ingest_s"]
    out["ratio_per_rep"] = [f["ingest_s"] / l["ingest_s"] for f, l in zip(reps["featstore"], reps["lancedb"])]
    return out


def ingest_md(name: str, res: dict, n: int, dim: int, reps: int) -> list[str]:
    f, l = res["featstore"], res["lancedb"]
    per = ", ".join(f"{x:.2f}" for x in res["ratio_per_rep"])
    return [f"### ingest, {name}: {n:,} × {dim}, median of {reps} alternating runs", "",
            "| | featstore | LanceDB | featstore / LanceDB |", "|---|---|---|---|",
            f"| ingest (wall) | {f['ingest_s']:.2f} s | {l['ingest_s']:.2f} s | {res['ratio']:.2f}× "
            f"(per run: {per}) |",
            f"| ingest (CPU of the process) | {f['cpu_s']:.2f} s | {l['cpu_s']:.2f} s | "
            f"{f['cpu_s'] / l['cpu_s']:.2f}× |",
            f"| on disk | {mb(f['disk_bytes'])} | {mb(l['disk_bytes'])} | "
            f"{f['disk_bytes'] / l['disk_bytes']:.2f}× |", ""]


def cpu_info() -> dict:
    info = {"model": "", "flags": []}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not info["model"]:
            info["model"] = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not info["flags"]:
            info["flags"] = line.split(":", 1)[1].split()
    simd = [f for f in info["flags"] if re.match(r"(sse|ssse|avx|fma|f16c|amx|bmi|popcnt)", f)]
    return {"model": info["model"], "cores": os.cpu_count(), "simd_flags": simd, "flags": info["flags"]}


def versions() -> dict:
    from importlib.metadata import version

    import featstore

    out = {"python": platform.python_version(), "featstore_from": str(Path(featstore.__file__).parent)}
    for pkg in ("featstore", "lancedb", "pylance", "faiss-cpu", "duckdb", "pyarrow", "numpy"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            pass
    return out


def mb(x: float) -> str:
    return f"{x / 1e6:.1f} MB"


def table_md(name: str, res: dict, n: int, dim: int, nq: int) -> list[str]:
    f, l = res["featstore"], res["lancedb"]
    fq, lq = f["query"], l["query"]

    def ratio(a, b):
        return f"{a / b:.2f}×" if b else "—"

    rows = [f"### {name}: {n:,} × {dim}, {DATASETS[name]['clusters']:,} clusters, {nq} queries, k = {K}", "",
            f"featstore: {f['index']['kind']} {f['index']['params']} "
            f"(tuned recall@10 {f['index']['recall_at_10']:.3f}); "
            f"LanceDB: IVF_PQ {l['index']['num_partitions']} partitions, {l['index']['num_sub_vectors']} sub-vectors, "
            f"nprobes {l['index']['nprobes']}, refine_factor {REFINE} (tuned recall@10 "
            f"{l['index']['tune_recall_at_10']:.3f}).", "",
            "| | featstore | LanceDB | featstore / LanceDB |", "|---|---|---|---|",
            f"| ingest | {f['ingest_s']:.1f} s | {l['ingest_s']:.1f} s | {ratio(f['ingest_s'], l['ingest_s'])} |",
            f"| index build | {f['build_s']:.1f} s | {l['build_s']:.1f} s (+ {l['tune_s']:.1f} s nprobes tuning) | "
            f"{ratio(f['build_s'], l['build_s'])} |",
            f"| index size on disk | {mb(f['index_bytes'])} | {mb(l['index_bytes'])} | "
            f"{ratio(f['index_bytes'], l['index_bytes'])} |",
            f"| whole store on disk | {mb(f['disk_bytes'])} | {mb(l['disk_bytes'])} | "
            f"{ratio(f['disk_bytes'], l['disk_bytes'])} |",
            f"| peak RSS, query process | {fq['peak_rss_mb']:.0f} MB | {lq['peak_rss_mb']:.0f} MB | "
            f"{ratio(fq['peak_rss_mb'], lq['peak_rss_mb'])} |"]
    for key, label in [("all", "unfiltered")] + [(str(b), f"bucket < {b} ({res['shares'][str(b)]:.1%})")
                                                 for _, b in SELECTIVITIES]:
        a, b = fq[key], lq[key]
        rows.append(f"| {label} p50 / p99 (recall@10) | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms "
                    f"({a['recall_at_10']:.3f}) | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} ms ({b['recall_at_10']:.3f}) | "
                    f"{ratio(a['p50_ms'], b['p50_ms'])} p50 |")
    rows.append(f"| first query of a condition (not in p50), unfiltered / 1% | {fq['all']['first_ms']:.0f} / "
                f"{fq['100']['first_ms']:.0f} ms | {lq['all']['first_ms']:.0f} / {lq['100']['first_ms']:.0f} ms | |")
    return rows + [""] + kinds_md(name, res)


def kinds_md(name: str, res: dict) -> list[str]:
    """One row per index: featstore's auto pick, each compressed kind asked for, LanceDB's IVF_PQ."""
    if not res.get("featstore_kinds"):
        return []
    conds = ["all"] + [str(b) for _, b in SELECTIVITIES]
    head = ("| index | build | size on disk | peak RSS, query | "
            + " | ".join("unfiltered" if c == "all" else f"bucket < {c} ({res['shares'][c]:.1%})" for c in conds)
            + " |")
    rows = [f"### {name}: index kinds (p50 ms, recall@10)", "", head, "|" + "---|" * (4 + len(conds))]

    def row(label: str, r: dict) -> str:
        q = r["query"]
        return (f"| {label} | {r['build_s']:.1f} s | {mb(r['index_bytes'])} | {q['peak_rss_mb']:.0f} MB | "
                + " | ".join(f"{q[c]['p50_ms']:.2f} ({q[c]['recall_at_10']:.3f})" for c in conds) + " |")

    f = res["featstore"]
    rows.append(row(f"featstore auto ({f['index']['kind']} {f['index']['params']})", f))
    for kind, r in res["featstore_kinds"].items():
        rows.append(row(f"featstore {kind} ({r['index']['params']})", r))
    l = res["lancedb"]
    rows.append(row(f"LanceDB IVF_PQ (nprobes {l['index']['nprobes']}, refine {REFINE})", l))
    return rows + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="query phases per system, alternating")
    ap.add_argument("--datasets", default="clustered,hard")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--ingest-only", action="store_true",
                    help="only the ingest of each data set, --reps alternating runs per system "
                         "(writes search_lancedb_ingest.{json,md})")
    ap.add_argument("--reps", type=int, default=5, help="with --ingest-only: runs per system")
    ap.add_argument("--kinds", default="auto,ivf-sq8,ivf-pq",
                    help="featstore index kinds to build and query in turn on the same store (auto first)")
    ap.add_argument("--child")
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--child-out", type=Path)
    args = ap.parse_args()
    if args.child:
        run = CHILD[args.child]
        args.child_out.write_text(json.dumps(run(args.work, args.kind) if args.child == "featstore-build"
                                             else run(args.work)))
        return
    if args.dim % 16:
        ap.error("--dim must be a multiple of 16 (IVF_PQ sub-vectors)")
    t0 = time.perf_counter()
    if args.ingest_only:
        results = {"n": args.n, "dim": args.dim, "reps": args.reps, "cpu": cpu_info(), "versions": versions(),
                   "datasets": {}}
        with tempfile.TemporaryDirectory(prefix="search_lancedb_") as tmp:
            for name in args.datasets.split(","):
                results["datasets"][name] = run_ingest(name, args, Path(tmp))
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"search_lancedb_ingest_{args.dim}"
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
        cpu = results["cpu"]
        md = [f"# featstore beside LanceDB: ingest, {args.dim}-d", "",
              f"{cpu['model']}, {cpu['cores']} cores (SIMD flags: {' '.join(cpu['simd_flags'])}); "
              + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".", ""]
        for name, res in results["datasets"].items():
            md += ingest_md(name, res, args.n, args.dim, args.reps)
        (args.out / f"{stem}.md").write_text("\n".join(md))
        print("\n".join(md))
        return
    results = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": K, "rounds": args.rounds,
               "cpu": cpu_info(), "versions": versions(), "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="search_lancedb_") as tmp:
        for name in args.datasets.split(","):
            results["datasets"][name] = run_dataset(name, args, Path(tmp))
    results["total_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_lancedb.json").write_text(json.dumps(results, indent=1))
    cpu = results["cpu"]
    md = ["# featstore beside LanceDB", "",
          f"{cpu['model']}, {cpu['cores']} cores (SIMD flags: {' '.join(cpu['simd_flags'])}); "
          + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ". "
          f"Latency: one query per call, medians over {args.rounds} alternating rounds of per-round p50/p99; "
          f"total run {results['total_s'] / 60:.1f} min.", ""]
    for name, res in results["datasets"].items():
        md += table_md(name, res, args.n, args.dim, args.queries)
    (args.out / "search_lancedb.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
