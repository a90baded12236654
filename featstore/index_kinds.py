"""Index kinds: exact flat, HNSW, IVF-Flat and IVF-SQ8 over L2-normalised vectors (inner product = cosine), the
rule `auto` uses to pick one, and the tuning of the search parameter against exact search.

Rule (`auto`): exact flat search while the set is small enough to scan fast (AUTO_FLAT_MAX vectors); beyond
that IVF-Flat if the full-precision vectors fit the memory budget, else IVF-SQ8 (1 byte per dimension). HNSW is
built when asked (`--kind hnsw`): it gives the best speed/recall, but building it on a 2-core machine takes far
longer than IVF. Product quantisation is never chosen (it loses too much recall).

Tuning: a seeded sample of stored vectors (TUNE_QUERIES, at most a tenth) is held out of the build, its exact top
10 among the rest is the truth, and the search parameter (nprobe / efSearch) climbs a ladder until recall@10
reaches the target; the held-out vectors are then added. Kind, parameters and measured recall go in the stamp.
"""
from __future__ import annotations

import math
import time

import faiss
import numpy as np

KINDS = ("auto", "flat", "hnsw", "ivf", "ivf-sq8")
AUTO_FLAT_MAX = 50_000
TUNE_QUERIES = 1000
HNSW_M = 32
NPROBE_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
EF_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)


def parse_bytes(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTIB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {text!r} (use e.g. 4GB or 512MB)") from None


def choose(n: int, dim: int, memory: int) -> str:
    if n <= AUTO_FLAT_MAX:
        return "flat"
    return "ivf" if n * dim * 4 * 1.1 <= memory else "ivf-sq8"


def nlist_for(n: int) -> int:
    return int(min(16384, max(16, round(math.sqrt(max(n, 1))))))


def empty(kind: str, dim: int, n: int) -> tuple[faiss.Index, dict]:
    """A new (untrained) index of a kind sized for n vectors, and its build parameters."""
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), {}
    if kind == "hnsw":
        return faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)), {"M": HNSW_M}
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.own_fields = True
    quantizer.this.disown()
    return index, {"nlist": nlist}


def train(index: faiss.Index, kind: str, vectors: np.ndarray, seed: int = 0, exclude: np.ndarray | None = None) -> dict:
    """Train an IVF index on a seeded sample (64 per list, as FAISS advises 39-256); returns the training record."""
    if not kind.startswith("ivf"):
        return {}
    ivf = faiss.extract_index_ivf(index)
    pool = np.flatnonzero(~exclude) if exclude is not None else np.arange(len(vectors))
    n_train = min(len(pool), 64 * ivf.nlist)
    sample = np.ascontiguousarray(
        vectors[np.sort(np.random.default_rng(seed).choice(pool, n_train, replace=False))], np.float32)
    ivf.cp.seed = seed
    if gpu_count():      # k-means assignments on the GPU; the trained index itself stays a CPU index
        clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        ivf.clustering_index = clustering
    index.train(sample)
    ivf.clustering_index = None
    return {"trained_count": int(len(pool)), "train_error": quantisation_error(index, sample)}


def quantisation_error(index: faiss.Index, vectors: np.ndarray) -> float:
    """Mean (1 - cosine to the nearest IVF centroid): how well the trained lists still describe the vectors."""
    ivf = faiss.extract_index_ivf(index)
    sims, _ = ivf.quantizer.search(np.ascontiguousarray(vectors[:20000], np.float32), 1)
    return float(np.mean(1 - sims[:, 0])) if len(sims) else 0.0


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu (which has no GPU functions) or without a GPU."""
    return faiss.get_num_gpus() if hasattr(faiss, "index_cpu_to_all_gpus") else 0


def on_gpu(index: faiss.Index, kind: str) -> faiss.Index:
    """The index cloned to every GPU when faiss-gpu sees one (flat and IVF kinds, through their IDMap wrapper,
    which FAISS's GPU cloner supports; HNSW stays on the CPU). IVF training also uses the GPU (see train).

    With faiss-cpu, or no GPU, the index comes back unchanged. UNTESTED: no session that built this had a GPU."""
    if kind == "hnsw" or not gpu_count():
        return index
    return faiss.index_cpu_to_all_gpus(index)


def set_param(index: faiss.Index, kind: str, params: dict) -> None:
    if kind == "hnsw" and "efSearch" in params:
        faiss.downcast_index(index.index).hnsw.efSearch = int(params["efSearch"])
    elif kind.startswith("ivf") and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def add(index: faiss.Index, vec_ids: np.ndarray, vectors: np.ndarray, mask: np.ndarray | None = None,
        chunk: int = 100_000) -> None:
    """Add vectors (the rows where mask is True) in chunks, so no full-size copy is made."""
    for start in range(0, len(vec_ids), chunk):
        ids, vecs = vec_ids[start:start + chunk], vectors[start:start + chunk]
        if mask is not None:
            keep = mask[start:start + chunk]
            ids, vecs = ids[keep], vecs[keep]
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vecs, np.float32), np.asarray(ids, dtype=np.int64))


def build_tuned(kind: str, vec_ids: np.ndarray, vectors: np.ndarray, dim: int, target: float,
                seed: int = 0, log=lambda msg: None) -> tuple[faiss.Index, dict]:
    """Build `kind` over unit vectors, tune its search parameter to `target` recall@10; (index, record)."""
    t0 = time.perf_counter()
    n = len(vec_ids)
    index, params = empty(kind, dim, n)
    record = {"kind": kind, "params": params, "target_recall": target, "recall_at_10": 1.0, "tuned_on": 0}
    if kind == "flat" or n < 100:
        if kind.startswith("ivf"):
            record.update(train(index, kind, vectors, seed))
        add(index, vec_ids, vectors)
        record["build_seconds"] = time.perf_counter() - t0
        return index, record
    rng = np.random.default_rng(seed)
    held = np.zeros(n, bool)
    held[rng.choice(n, min(TUNE_QUERIES, n // 10), replace=False)] = True
    log(f"training/building {kind} on {n - held.sum()} vectors ...")
    if kind.startswith("ivf"):
        record.update(train(index, kind, vectors, seed, exclude=held))
    add(index, vec_ids, vectors, mask=~held)
    queries = np.ascontiguousarray(vectors[held], np.float32)
    truth = exact_topk(vectors, vec_ids, queries, 10, exclude=held)
    ladder = EF_LADDER if kind == "hnsw" else [p for p in NPROBE_LADDER if p <= params["nlist"]]
    name = "efSearch" if kind == "hnsw" else "nprobe"
    for value in ladder:
        set_param(index, kind, {name: value})
        _, got = index.search(queries, 10)
        recall = recall_at(got, truth)
        log(f"  {name}={value}: recall@10 {recall:.4f}")
        record["params"][name], record["recall_at_10"] = value, recall
        if recall >= target:
            break
    record["tuned_on"] = int(held.sum())
    add(index, vec_ids, vectors, mask=held)
    record["build_seconds"] = time.perf_counter() - t0
    return index, record


def recall_at(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got.tolist(), truth.tolist())]))


def exact_topk(base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, k: int,
               exclude: np.ndarray | None = None, chunk: int = 100_000) -> np.ndarray:
    """Exact top-k ids by inner product, scanning base in chunks (memory: one chunk of scores)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(base), chunk):
        scores = queries @ np.ascontiguousarray(base[start:start + chunk], np.float32).T
        if exclude is not None:
            scores[:, exclude[start:start + chunk]] = -np.inf
        ids = np.broadcast_to(base_ids[start:start + chunk], scores.shape)
        s_all, i_all = np.concatenate([best_s, scores], 1), np.concatenate([best_i, ids], 1)
        top = np.argpartition(-s_all, min(k, s_all.shape[1] - 1), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)
