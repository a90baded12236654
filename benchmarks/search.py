"""Benchmark: nearest-neighbour search at scale, every index kind against brute force, in one run.

    python benchmarks/search.py [--n 1000000] [--dim 1280] [--hnsw-n 100000] [--kinds ivf,ivf-sq8,hnsw]
                                [--skip-near-dup] [--out benchmarks/results]

Data: N seeded synthetic unit vectors with cluster structure (200 clusters), 1,000 held-out queries from the
same distribution, k = 10. Rows: numpy brute force (what a user writes), FAISS exact (flat), and each index kind
built and tuned by featstore (`featstore.index_kinds.build_tuned`, target recall@10 0.95 on stored vectors):
build seconds, bytes per vector, batched queries/s, single-query latency, recall@10 on the held-out queries.
HNSW is built on --hnsw-n vectors (on a million 1280-d vectors it took 987 s on 2 cores against ~100 s for IVF;
pass --hnsw-n equal to --n to include it at full size, --kinds hnsw --skip-near-dup for that row alone). Also filtered search at 1%, 10% and 50%
selectivity: featstore's rule (search/filtered.py: the passing ids as a FAISS selector in the auto index, probing
as many lists as the selectivity needs) against filtering after an unfiltered exact search with a large k
(k / selectivity x 4, grown until k pass).
Targets: auto at 1M recall@10 >= 0.95 with batched queries/s >= 20x FAISS exact; filtered search at
1% exact and >= 10x faster than post-filtering. Writes search.json and search.md.

    python benchmarks/search.py --lancedb [search_lancedb.py's options]

runs featstore beside LanceDB instead (benchmarks/search_lancedb.py, which needs the `bench` extra): ingest,
build, size, memory, unfiltered and filtered latency and recall of both on the same data.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from featstore.store.index_kinds import Vectors, build_tuned, choose, exact_topk, recall_at, set_param
from featstore.search.filtered import filtered_topk

HERE = Path(__file__).resolve().parent
K = 10


def data(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim), dtype=np.float32)
    out = np.empty((n + n_queries, dim), np.float32)
    for start in range(0, len(out), 100_000):
        m = min(100_000, len(out) - start)
        block = centres[rng.integers(0, 200, m)] + 0.7 * rng.standard_normal((m, dim), dtype=np.float32)
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out[:n], out[n:]


def chunk_of(i: int, dim: int, size: int = 100_000, seed: int = 0) -> np.ndarray:
    """Chunk i of a streamed data set (regenerated on demand, never all in memory). Its last 50 rows are
    near-copies (cosine ~0.99) of its first 50: the planted near-duplicates."""
    centres = np.random.default_rng(seed).standard_normal((200, dim), dtype=np.float32)
    rng = np.random.default_rng((seed, i))
    x = centres[rng.integers(0, 200, size)] + 0.7 * rng.standard_normal((size, dim), dtype=np.float32)
    x[-50:] = x[:50] + 0.1 * rng.standard_normal((50, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_duplicates_streamed(n: int, dim: int, nprobe: int, threshold: float = 0.97) -> dict:
    """featstore's duplicates search (duplicates.pairs_in_chunks) over an IVF-SQ8 index of n streamed vectors,
    run in this process so that its peak memory is what it alone needs."""
    from featstore.search.duplicates import pairs_in_chunks
    from featstore.store.index_kinds import Vectors, empty, train

    size = min(100_000, n)          # chunks of the streamed set (n below 100,000: one chunk)
    n_chunks = n // size
    index, params = empty("ivf-sq8", dim, n)
    t0 = time.perf_counter()
    sample = np.concatenate([chunk_of(i, dim, size) for i in range(2)])
    train(index, "ivf-sq8", Vectors(np.arange(1, len(sample) + 1), sample))
    for i in range(n_chunks):
        index.add_with_ids(chunk_of(i, dim, size), np.arange(i * size, (i + 1) * size, dtype=np.int64) + 1)
    set_param(index, "ivf-sq8", {"nprobe": nprobe})
    build = time.perf_counter() - t0

    def chunks():
        for i in range(n_chunks):
            x = chunk_of(i, dim, size)
            for j in range(0, size, 4096):
                yield np.arange(i * size + j, i * size + min(j + 4096, size), dtype=np.int64) + 1, x[j:j + 4096]

    t0 = time.perf_counter()
    a, b, sims = pairs_in_chunks(index, chunks(), threshold)
    seconds = time.perf_counter() - t0
    planted = {(i * size + r + 1, i * size + size - 50 + r + 1) for i in range(n_chunks) for r in range(50)}
    found = set(zip(a.tolist(), b.tolist()))
    return {"n": n, "threshold": threshold, "index": f"ivf-sq8 ({params['nlist']} lists, nprobe {nprobe})",
            "build_seconds": build, "search_seconds": seconds, "pairs": int(len(a)),
            "planted_pairs": len(planted), "planted_found": len(planted & found) / len(planted),
            "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry a forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def timed_queries(search, queries: np.ndarray) -> tuple[float, float]:
    """(batched queries/s over all queries, median single-query latency in ms over 50)."""
    search(queries[:5])
    t0 = time.perf_counter()
    search(queries)
    qps = len(queries) / (time.perf_counter() - t0)
    lat = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        search(q[None])
        lat.append(time.perf_counter() - t0)
    return qps, 1000 * float(np.median(lat))


def index_bytes(index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def main() -> None:
    if "--lancedb" in sys.argv[1:]:         # the side-by-side with LanceDB: search_lancedb.py, with its own options
        rest = [a for a in sys.argv[1:] if a != "--lancedb"]
        sys.exit(subprocess.run([sys.executable, str(HERE / "search_lancedb.py"), *rest]).returncode)
    ap = argparse.ArgumentParser()
    ap.add_argument("--lancedb", action="store_true", help="run featstore beside LanceDB instead "
                    "(search_lancedb.py; the bench extra); the options after it are that script's")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--hnsw-n", type=int, default=100_000)
    ap.add_argument("--kinds", default="ivf,ivf-sq8,hnsw", help="index kinds to build (filtered search and the "
                    "auto target need auto's kind among them)")
    ap.add_argument("--skip-near-dup", action="store_true", help="leave out the streamed near-duplicate run")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--near-dup-child", type=int, default=None, help=argparse.SUPPRESS)   # nprobe; internal
    args = ap.parse_args()
    if args.near_dup_child is not None:
        print(json.dumps(near_duplicates_streamed(args.n, args.dim, args.near_dup_child)))
        return
    n, dim = args.n, args.dim
    log = (lambda msg: print(msg, file=sys.stderr))
    log(f"generating {n} x {dim} vectors ...")
    base, queries = data(n, dim, 1000)
    ids = np.arange(1, n + 1, dtype=np.int64)
    log("exact truth ...")
    t0 = time.perf_counter()
    truth = exact_topk(base, ids, queries, K)
    rows = []

    def numpy_search(q):
        return exact_topk(base, ids, q, K)

    qps, lat = timed_queries(numpy_search, queries[:200])
    rows.append({"method": "numpy brute force", "n": n, "build_seconds": 0.0, "bytes_per_vector": dim * 4,
                 "qps": qps, "latency_ms": lat, "recall_at_10": 1.0, "params": {}})
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    t0 = time.perf_counter()
    flat.add_with_ids(base, ids)
    build = time.perf_counter() - t0
    qps_flat, lat = timed_queries(lambda q: flat.search(q, K), queries)
    rows.append({"method": "FAISS exact (flat)", "n": n, "build_seconds": build, "bytes_per_vector": dim * 4,
                 "qps": qps_flat, "latency_ms": lat, "recall_at_10": recall_at(flat.search(queries, K)[1], truth),
                 "params": {}})
    flat = None
    auto_kind = choose(n, dim, 4 * 10**9)
    auto_index = None
    for kind in args.kinds.split(","):
        m = n if kind != "hnsw" else min(n, args.hnsw_n)
        log(f"{kind} on {m} vectors ...")
        index, record = build_tuned(kind, Vectors(ids[:m], base[:m]), dim, 0.95, log=log)
        set_param(index, kind, record["params"])
        t_truth = truth if m == n else exact_topk(base[:m], ids[:m], queries, K)
        qps, lat = timed_queries(lambda q: index.search(q, K), queries)
        if kind == auto_kind:
            auto_index = index
        rows.append({"method": f"featstore {kind}" + (" (auto's choice)" if kind == auto_kind else "")
                     + ("" if m == n else f" on {m:,}"), "n": m, "build_seconds": record["build_seconds"],
                     "bytes_per_vector": index_bytes(index) / m, "qps": qps, "latency_ms": lat,
                     "recall_at_10": recall_at(index.search(queries, K)[1], t_truth),
                     "tuned_recall_on_stored": record["recall_at_10"], "params": record["params"]})
        index = None

    log("filtered search ...")
    rng = np.random.default_rng(1)
    fq = queries[:100]
    filtered = []
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    for sel in ((0.01, 0.10, 0.50) if auto_index is not None else ()):
        passing = np.sort(rng.choice(n, int(n * sel), replace=False))
        mask = np.zeros(n, bool)
        mask[passing] = True
        exact = exact_topk(base[passing], ids[passing], fq, K)
        t0 = time.perf_counter()
        strategy = f"selector in the {auto_kind} index (search/filtered.py)"
        got = filtered_topk(auto_index, auto_kind, fq, K, ids[passing], n,
                            lambda wanted: (wanted, base[np.searchsorted(ids, wanted)]))[1]
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        big = int(K / sel * 4)
        while True:                                   # baseline: post-filter FAISS exact, grow k until k pass
            _, idx = flat.search(fq, min(big, n))
            ok = [[i for i in row if mask[i]][:K] for row in idx.tolist()]
            if all(len(r) == K for r in ok) or big >= n:
                break
            big *= 2
        t_post = time.perf_counter() - t0
        filtered.append({"selectivity": sel, "passing": int(len(passing)), "strategy": strategy,
                         "featstore_seconds": t_ours, "postfilter_seconds": t_post, "postfilter_k": big,
                         "speedup": t_post / t_ours, "featstore_recall": recall_at(got, exact),
                         "postfilter_recall": recall_at(ids[np.array(ok)], exact)})
    flat = None
    auto_index = None
    auto = next((r for r in rows if "auto's choice" in r["method"]), None)
    near = None
    if not args.skip_near_dup:
        log("near-duplicates, streamed, in a separate process ...")
        nprobe = auto["params"].get("nprobe", 4) if auto else 4
        child = subprocess.run([sys.executable, __file__, "--n", str(n), "--dim", str(dim), "--near-dup-child",
                                str(nprobe)], capture_output=True, text=True, check=True)
        near = json.loads(child.stdout.strip().splitlines()[-1])
    peak_gb = peak_rss_gb()
    targets = {}
    if auto:
        targets.update(auto_kind=auto_kind, auto_recall=auto["recall_at_10"],
                       auto_qps_vs_faiss_exact=auto["qps"] / qps_flat,
                       **{"auto_ge_0.95_and_20x": auto["recall_at_10"] >= 0.95 and auto["qps"] / qps_flat >= 20,
                          "filtered_1pct_exact_and_10x": filtered[0]["featstore_recall"] == 1.0
                          and filtered[0]["speedup"] >= 10})
    if near:
        targets.update(near_duplicates_peak_gb=near["peak_rss_gb"], near_duplicates_lt_6gb=near["peak_rss_gb"] < 6)
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "n": n, "dim": dim, "queries": len(queries), "k": K, "rows": rows, "filtered": filtered,
        "near_duplicates": near,
        "peak_rss_gb": peak_gb,
        "targets": targets,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(result, indent=2))
    md = [f"# search benchmark\n\n{result['machine']}; {n:,} x {dim} synthetic clustered unit vectors, "
          f"1,000 held-out queries, k = 10; peak RSS {peak_gb:.1f} GB\n",
          "| method | vectors | build s | bytes/vector | batched q/s | latency ms | recall@10 | params |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    md += [f"| {r['method']} | {r['n']:,} | {r['build_seconds']:.1f} | {r['bytes_per_vector']:.0f} | "
           f"{r['qps']:,.0f} | {r['latency_ms']:.2f} | {r['recall_at_10']:.4f} | "
           f"{', '.join(f'{k}={v}' for k, v in r['params'].items())} |" for r in rows]
    md += ["", "| filter selectivity | passing | featstore strategy | featstore s (100 queries) | "
               "post-filter exact s | post-filter k | speed-up | featstore recall |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
    md += [f"| {100 * f['selectivity']:.0f}% | {f['passing']:,} | {f['strategy']} | {f['featstore_seconds']:.3f} | "
           f"{f['postfilter_seconds']:.3f} | {f['postfilter_k']:,} | {f['speedup']:.1f}x | "
           f"{f['featstore_recall']:.4f} |" for f in filtered]
    if near:
        md += ["", f"near-duplicates at cosine >= {near['threshold']} over {near['n']:,} streamed vectors, "
                   f"{near['index']}: index built in {near['build_seconds']:.0f} s, range searches "
                   f"{near['search_seconds']:.0f} s, {near['pairs']:,} pairs, {100 * near['planted_found']:.1f}% of "
                   f"{near['planted_pairs']:,} planted near-copies found; peak RSS of that process "
                   f"{near['peak_rss_gb']:.2f} GB"]
    md += ["", "targets: " + json.dumps(result["targets"])]
    (out / "search.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
