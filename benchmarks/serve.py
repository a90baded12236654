"""Benchmark: `featstore serve` under load: search over HTTP on a store of N stored vectors, from C concurrent
clients, first on a quiet machine and then while a second process embeds into the same store.

    python benchmarks/serve.py [FOLDER] [--n 100000] [--requests 2000] [--clients 8] [--out benchmarks/results]

The store holds FOLDER's photos embedded with the default backbone plus N - len(FOLDER) seeded synthetic unit
vectors at the backbone's dimension in the same embedding set (so every stored item is a query and a result), with
the index `auto` picks. The server is `featstore serve` as a user starts it (its own process, 127.0.0.1). Each
phase sends a fixed number of POST /search calls (JSON {id, k: 10}; ids drawn with a fixed seed), each client
on one keep-alive connection, and reports q/s, p50/p99 latency and failed requests; a shorter phase uploads a
photo per call (multipart, embedded by the server). The writer phase embeds rotated copies of FOLDER's photos
with `featstore embed --wait`; afterwards the store must verify clean and the server must serve the new items.
Target: p99 <= 100 ms at 8 clients for id searches on the quiet machine; zero failed requests in every phase.

The gallery phase (GET /grid, the web app's page requests; one client, as one person scrolling and filtering, with
a logreg head fitted on FOLDER's labels so every page carries the head's prediction for each of the N items):
"scroll" asks for successive pages (offset 0, 120, 240, ... limit 120) of the whole store; "filter" asks for a page
with the per-filter counts under combined filters (label, split, the head's prediction, correct/wrong, a confidence
range, status, and the guarded SQL `where`), cycling through a fixed list. The first request that needs the head's
predictions computes them for every item (one pass over the vectors) and is reported apart. Target: p99 < 200 ms
per page request. `--grid-only` runs only this phase.
Writes serve.json and serve.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma") if f in flags)


def add_synthetic(store: Path, n: int, seed: int = 0) -> None:
    """n seeded unit vectors (200 clusters) as items of the store's newest set, under made-up paths."""
    from featstore.store.db import Store

    rng = np.random.default_rng(seed)
    with Store.open(store, write=True) as st:
        s = st.pick_set(None)
        centres = rng.standard_normal((200, s.dim)).astype(np.float32)
        for start in range(0, n, 20_000):
            m = min(20_000, n - start)
            v = centres[rng.integers(0, 200, m)] + 0.5 * rng.standard_normal((m, s.dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            hashes = [f"{start + i:032x}" for i in range(m)]
            st.write_batch(s, [{"path": f"/synthetic/{start + i}.jpg", "hash": h, "size": 1, "mtime": 0.0,
                                "width": 1, "height": 1, "status": "ok", "error": None}
                               for i, h in enumerate(hashes)], hashes, v)


def wait_for(port: int, proc, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"featstore serve exited: {proc.stderr.read()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/stats")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    sys.exit("featstore serve did not start")


def load(port: int, bodies: list[tuple[bytes, str]], clients: int) -> dict:
    """Send every body once as POST /search from `clients` threads (one keep-alive connection each)."""
    chunks = [bodies[i::clients] for i in range(clients)]

    def client(mine):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        out = []
        for body, ctype in mine:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/search", body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and json.loads(data).get("results")
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                ok = False
            out.append((time.perf_counter() - t0, bool(ok)))
        return out

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(client, chunks) for r in part]
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results]) * 1000
    return {"requests": len(results), "clients": clients, "failed": sum(not r[1] for r in results),
            "qps": round(len(results) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "wall_s": round(wall, 2)}


GRID_FILTERS = [
    "task=flowers&label=roses",
    "task=flowers&label=roses&label=tulips&split=test",
    "task=flowers&head=bench&correct=wrong",
    "task=flowers&head=bench&pred=daisy&conf_max=0.8",
    "task=flowers&status=unlabelled&head=bench&conf_min=0.5&sort=conf",
    "task=flowers&where=path%20LIKE%20%27%25synthetic%25%27&head=bench&pred=roses",
    "task=flowers&where=item_id%20%25%207%20%3D%200&split=train",
    "task=flowers&head=bench&status=labelled&correct=correct&label=sunflowers",
]


def grid_load(port: int, queries: list[str]) -> dict:
    """GET /grid?QUERY for each query in turn on one keep-alive connection: latency percentiles."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    lat, failed = [], 0
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        try:
            conn.request("GET", "/grid?" + q)
            r = conn.getresponse()
            body = json.loads(r.read())
            ok = r.status == 200 and "items" in body
        except (OSError, http.client.HTTPException, ValueError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            ok = False
        lat.append(time.perf_counter() - t)
        failed += not ok
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"requests": len(queries), "clients": 1, "failed": failed, "qps": round(len(queries) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1), "wall_s": round(wall, 2)}


def grid_phase(port: int, n: int, requests: int) -> dict:
    """The gallery phase (see the module's docstring)."""
    t = time.perf_counter()
    first = grid_load(port, ["task=flowers&head=bench&limit=120"])       # computes the head's predictions
    first["first_request_s"] = round(time.perf_counter() - t, 2)
    pages = max(1, n // 120)
    scroll = grid_load(port, [f"task=flowers&head=bench&offset={(i % pages) * 120}&limit=120&counts=false"
                              for i in range(requests)])
    filters = grid_load(port, [GRID_FILTERS[i % len(GRID_FILTERS)] + "&limit=120" for i in range(requests)])
    return {"first_with_head": first, "scroll": scroll, "filter_with_counts": filters, "target_p99_ms": 200,
            "meets_target": max(scroll["p99_ms"], filters["p99_ms"]) < 200
            and not (scroll["failed"] or filters["failed"])}


def stats(port: int) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/stats")
    return json.loads(c.getresponse().read())


def multipart(photo: bytes) -> tuple[bytes, str]:
    b = "featstorebench"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="task"\r\n\r\nflowers\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="k"\r\n\r\n10\r\n--{b}\r\nContent-Disposition: '
            f'form-data; name="file"; filename="q.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + photo \
        + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--n", type=int, default=100_000, help="stored vectors in all")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--uploads", type=int, default=200, help="image-upload searches (quiet phase)")
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the store (printed) instead of removing it")
    ap.add_argument("--reuse", default=None, help="a store kept by an earlier run (--keep): skip building it")
    ap.add_argument("--grid-requests", type=int, default=400, help="GET /grid requests per gallery phase")
    ap.add_argument("--grid-only", action="store_true", help="only the gallery phase (GET /grid)")
    args = ap.parse_args()

    import featstore
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="featstore-bench-serve-"))
    store, env = Path(args.reuse) if args.reuse else work / "store", dict(os.environ)
    t0 = time.perf_counter()
    fs = featstore.open(store)
    if not args.reuse:
        fs.embed(args.folder, progress=False, log=lambda *_: None)
        add_synthetic(store, max(args.n - fs.stats()["items"]["ok"], 0))
    if "bench" not in [h["name"] for h in fs.stats()["heads"]]:
        fs.fit_head("flowers", head="logreg", name="bench", log=lambda *_: None)
    stamp = fs.build_index("auto")
    args.n = fs.stats()["items"]["ok"]
    build_s = time.perf_counter() - t0
    print(f"store: {args.n:,} vectors, index {stamp['kind']}, built in {build_s:.0f} s", flush=True)

    photos = sorted(p for p in Path(args.folder).rglob("*.jpg"))
    more = work / "more"          # rotated copies: new contents, embedded while the server is under load
    for i, p in enumerate(photos[:300]):
        (more / p.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(p).rotate(90, expand=True).save(more / p.parent.name / f"r{i}.jpg")

    server = subprocess.Popen([sys.executable, "-m", "featstore.cli.main", "serve", "--store", str(store),
                               "--port", str(args.port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(args.port, server)
        grid = grid_phase(args.port, args.n, args.grid_requests)
        print("gallery:", grid, flush=True)
        if args.grid_only:
            server.terminate()
            server.wait(timeout=30)
            return _write_grid_only(args, stamp, grid, store, work)
        rng = np.random.default_rng(1)
        ids = rng.integers(1, args.n + 1, args.requests).tolist()
        by_id = [(json.dumps({"id": i, "k": 10, "task": "flowers"}).encode(), "application/json") for i in ids]
        load(args.port, by_id[:100], args.clients)                             # warm-up (not reported)
        quiet = load(args.port, by_id, args.clients)
        print("quiet, by id:", quiet, flush=True)
        upload = load(args.port, [multipart(photos[i % len(photos)].read_bytes()) for i in range(args.uploads)],
                      args.clients)
        print("quiet, uploaded image:", upload, flush=True)
        before = stats(args.port)["items"]["ok"]
        writer = subprocess.Popen([sys.executable, "-m", "featstore.cli.main", "embed", str(more), "--store",
                                   str(store), "--task", "more", "--no-progress", "--wait"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)                                                          # the writer holds the store now
        busy = load(args.port, by_id, args.clients)
        busy["writer_still_running_at_end"] = writer.poll() is None
        print("while embedding, by id:", busy, flush=True)
        _, err = writer.communicate(timeout=1800)
        if writer.returncode != 0:
            sys.exit(f"embed failed: {err}")
        deadline = time.monotonic() + 300
        while (seen := stats(args.port)["items"]["ok"]) < before + len(photos[:300]) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    verify = featstore.open(store).verify()
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, CPU flags {cpu_flags()}, "
                         f"Python {platform.python_version()}",
              "n": args.n, "index": stamp["kind"], "build_s": round(build_s, 1), "quiet_by_id": quiet,
              "quiet_upload": upload, "while_embedding_by_id": busy, "items_served_before": before, "items_served_after": seen,
              "verify_ok": verify["ok"], "target_p99_ms": 100, "gallery": grid,
              "meets_target": quiet["p99_ms"] <= 100 and not (quiet["failed"] or upload["failed"] or busy["failed"])
              and verify["ok"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(result, indent=2))
    rows = [("quiet, search by id", quiet), ("quiet, uploaded image", upload), ("while embedding, by id", busy)]
    md = [f"# serve benchmark\n\n{result['machine']}; {args.n:,} stored vectors ({stamp['kind']} index), "
          f"{args.clients} clients, POST /search k=10\n",
          "| phase | requests | failed | q/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {name} | {r['requests']} | {r['failed']} | {r['qps']} | {r['p50_ms']} | {r['p99_ms']} |"
           for name, r in rows]
    md.append(f"\nstore verifies clean afterwards: {verify['ok']}; items served before / after the embed: {before:,} / {seen:,}; "
              f"target p99 <= 100 ms (quiet, by id) and zero failures: {'met' if result['meets_target'] else 'NOT met'}")
    md += grid_md(grid)
    _report(md, out / "serve.md", args.keep, store, work)


def grid_md(grid: dict) -> list[str]:
    rows = [("first request with a head (predicts every item)", grid["first_with_head"]),
            ("scroll: successive pages of 120", grid["scroll"]),
            ("filter: combined filters + counts", grid["filter_with_counts"])]
    return ["\n## gallery (GET /grid, 1 client)\n", "| phase | requests | failed | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|"] + [
        f"| {name} | {r['requests']} | {r['failed']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |"
        for name, r in rows] + [
        f"\ntarget p99 < 200 ms per page request: {'met' if grid['meets_target'] else 'NOT met'}"]


def _write_grid_only(args, stamp, grid: dict, store: Path, work: Path) -> None:
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, CPU flags {cpu_flags()}, "
                         f"Python {platform.python_version()}", "n": args.n, "index": stamp["kind"], "gallery": grid}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_grid.json").write_text(json.dumps(result, indent=2))
    md = [f"# serve benchmark: gallery\n\n{result['machine']}; {args.n:,} stored items"] + grid_md(grid)
    _report(md, out / "serve_grid.md", args.keep, store, work)


def _report(md: list[str], path: Path, keep: bool, store: Path, work: Path) -> None:
    """Write and print the Markdown report; remove the benchmark's work folder unless --keep."""
    path.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if keep:
        print(f"store kept at {store}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
