"""Index kinds: exact flat, HNSW, IVF-Flat, IVF-SQ8 and IVF-PQ over L2-normalised vectors (inner product =
cosine), the rule `auto` uses to pick one, and the tuning of the search parameter against exact search.

Rule (`auto`): the first of exact flat search (while the set is small enough to scan fast: AUTO_FLAT_MAX
vectors), IVF-Flat, IVF-SQ8 (1 byte per dimension) and IVF-PQ (1 byte per 4 dimensions) whose index fits the
memory budget (`index_bytes` estimates it); a budget given that none fits is an error naming the smallest that
would do. The compressed kinds rank REFINE[kind] x k candidates on their codes, then re-score them on the stored
vectors (the refine step), and their recall is tuned and measured that way. HNSW is built
when asked (`--kind hnsw`, M 32, efConstruction 160): it gives the best speed/recall, but building it on a 2-core
machine takes far longer than IVF.

Tuning: a seeded sample of stored vectors (TUNE_QUERIES, at most a tenth) is held out of the build, its exact top
10 among the rest is the truth, and the search parameter (nprobe / efSearch) climbs a ladder until recall@10
reaches the target; the held-out vectors are then added. Kind, parameters and measured recall go in the stamp.

Memory: a build reads its vectors through a `Vectors` source chunk by chunk (the store's source reads DuckDB), so
it holds the index, one chunk and the samples it draws (training sample, held-out queries), never the whole
float matrix: IVF lists are trained on a seeded sample, vectors are added chunk by chunk, and the exact truth
for tuning is accumulated over the same chunks.
"""
from __future__ import annotations

import math
import time

import numpy as np

from featstore import runtimes
from featstore.errors import FeatstoreError
from featstore.logs import verbose

faiss = runtimes.faiss()     # FAISS from the cpu or the gpu extra; without it, one line naming both

KINDS = ("auto", "flat", "hnsw", "ivf", "ivf-sq8", "ivf-pq")
REFINE = {"ivf-sq8": 4, "ivf-pq": 32}     # compressed kinds: candidates per result ranked on their codes, then
                                          # re-scored on the stored vectors (PQ at 20: recall@10 0.98 on 200k
                                          # spread 256-d vectors, at 32: 0.995, for about 1 ms more a query)
AUTO_FLAT_MAX = 50_000
TUNE_QUERIES = 1000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 160     # faiss's default 40 left recall stuck at 0.98 on 300k and 0.90 on 1M 1280-d vectors
NPROBE_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
EF_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)
DEFAULT_MEMORY = 4 * 10**9     # auto's budget when none is given


def parse_bytes(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTIB")
    try:
        value = float(num) * units[t[len(num):]]
    except (ValueError, KeyError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"not a size: {text!r} (use e.g. 4GB or 512MB)")
    return int(value)


def size_text(n: int, up: bool = True) -> str:
    """A byte count as --memory takes it, to a tenth of its unit (e.g. 133.5KB): rounded up, or (up False) exact
    in bytes where a tenth would round it."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale and (up or n % (scale // 10) == 0):
            return f"{-(-n * 10 // scale) / 10:g}{unit}"
    return f"{n}B"


def index_bytes(kind: str, n: int, dim: int) -> int:
    """About the memory an index of `kind` over n vectors takes: codes, ids, IVF centroids, HNSW links."""
    if kind == "flat":
        return n * (4 * dim + 16)
    if kind == "hnsw":
        return n * (4 * dim + 16 + 8 * HNSW_M)
    code = {"ivf-sq8": dim, "ivf-pq": pq_m(dim)}.get(kind, 4 * dim)
    return n * (code + 8) + nlist_for(n) * 4 * dim + (256 * 4 * dim if kind == "ivf-pq" else 0)


def pq_m(dim: int) -> int:
    """Sub-quantisers of an IVF-PQ index: one byte per 4 dimensions (the largest divisor of dim up to dim / 4)."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


def auto_kinds(n: int) -> tuple[str, ...]:
    """The kinds `auto` picks among for n vectors, preferred first (IVF needs a training point per list)."""
    return (("flat",) if n <= AUTO_FLAT_MAX else ()) + (("ivf", "ivf-sq8") if n >= nlist_for(n) else ()) + \
        (("ivf-pq",) if n >= max(nlist_for(n), 256) * 4 else ())


def choose(n: int, dim: int, memory: int = DEFAULT_MEMORY) -> str:
    """auto's kind: the first that fits `memory`, else the smallest."""
    options = auto_kinds(n)
    return next((k for k in options if index_bytes(k, n, dim) <= memory),
                min(options, key=lambda k: index_bytes(k, n, dim)))


def check_budget(kind: str, n: int, dim: int, memory: int) -> None:
    """A one-line error when `memory` holds no index of `kind` ('auto': of any kind it picks among)."""
    need = min(auto_kinds(n) if kind == "auto" else (kind,), key=lambda k: index_bytes(k, n, dim))
    if index_bytes(need, n, dim) > memory:
        what, who = ("any index", f"the smallest ({need})") if kind == "auto" else (f"a --kind {kind} index", "it")
        raise FeatstoreError(f"--memory {size_text(memory, up=False)} is too small for {what} of {n} vectors of "
                             f"dimension {dim}: {who} needs about {size_text(index_bytes(need, n, dim))}")


def nlist_for(n: int) -> int:
    return int(min(16384, max(16, round(math.sqrt(max(n, 1))))))


def empty(kind: str, dim: int, n: int) -> tuple[faiss.Index, dict]:
    """A new (untrained) index of a kind sized for n vectors, and its build parameters."""
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), {}
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(hnsw), {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m(dim), 8, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.own_fields = True
    quantizer.this.disown()
    return index, {"nlist": nlist} | ({"m": pq_m(dim)} if kind == "ivf-pq" else {})


class Vectors:
    """Unit vectors with int64 ids, read chunk by chunk (`chunks`) or by id (`fetch`). This one holds arrays in
    memory; index.StoreVectors reads a store."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, chunk: int = 100_000):
        self.ids, self._vectors, self._chunk = np.asarray(ids, np.int64), vectors, chunk
        self._pos = {int(i): k for k, i in enumerate(self.ids)} if len(self.ids) else {}

    def chunks(self):
        for start in range(0, len(self.ids), self._chunk):
            yield self.ids[start:start + self._chunk], np.ascontiguousarray(
                self._vectors[start:start + self._chunk], np.float32)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._vectors[[self._pos[int(i)] for i in ids]], np.float32)


def train(index: faiss.Index, kind: str, source: Vectors, seed: int = 0, exclude: np.ndarray | None = None) -> dict:
    """Train an IVF index on a seeded sample (64 per list, as FAISS advises 39-256); returns the training record."""
    if not kind.startswith("ivf"):
        return {}
    ivf = faiss.extract_index_ivf(index)
    pool = np.flatnonzero(~exclude) if exclude is not None else np.arange(len(source.ids))
    n_train = min(len(pool), max(64 * ivf.nlist, 40 * 256 if kind == "ivf-pq" else 0))   # PQ: 256 codes
    sample = source.fetch(source.ids[np.sort(np.random.default_rng(seed).choice(pool, n_train, replace=False))])
    ivf.cp.seed = seed
    if not verbose():      # faiss warns on stderr (from C++) below 39 training points per list; only --verbose
        ivf.cp.min_points_per_centroid = 1
    if gpu_count():      # k-means assignments on the GPU; the trained index itself stays a CPU index
        clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        ivf.clustering_index = clustering
    index.train(sample)
    ivf.clustering_index = None
    return {"trained_count": int(len(pool)), "train_error": quantisation_error(index, sample)}


def ids_of(index: faiss.Index) -> np.ndarray:
    """The ids an index holds, ascending: the id map of flat/HNSW, the inverted lists' ids of IVF."""
    if hasattr(index, "id_map"):
        return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
    inv = faiss.extract_index_ivf(index).invlists
    parts = [faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy() for i in range(inv.nlist)
             if inv.list_size(i)]
    return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)


def quantisation_error(index: faiss.Index, vectors: np.ndarray) -> float:
    """Mean (1 - cosine to the nearest IVF centroid): how well the trained lists still describe the vectors."""
    ivf = faiss.extract_index_ivf(index)
    sims, _ = ivf.quantizer.search(np.ascontiguousarray(vectors[:20000], np.float32), 1)
    return float(np.mean(1 - sims[:, 0])) if len(sims) else 0.0


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu (the cpu extra; no GPU functions) or without a GPU."""
    return faiss.get_num_gpus() if hasattr(faiss, "index_cpu_to_all_gpus") else 0


def on_gpu(index: faiss.Index, kind: str) -> faiss.Index:
    """The index cloned to every GPU when faiss has GPU support and sees one (the gpu extra's faiss-gpu-cuvs, built
    for CUDA 13 like onnxruntime-gpu; flat and IVF kinds, through their IDMap wrapper, which FAISS's GPU cloner
    supports; HNSW and IVF-PQ stay on the CPU). FAISS's own GPU indexes: cuVS is opt-in (GpuClonerOptions.use_cuvs) and not
    asked for. IVF training also uses the GPU (see train).

    With faiss-cpu, or no GPU, the index comes back unchanged. Not yet run on a GPU; tests/test_gpu.py checks this
    path where faiss sees a GPU."""
    if kind in ("hnsw", "ivf-pq") or not gpu_count():      # FAISS's GPU IVF-PQ takes fewer sub-quantisers
        return index
    return faiss.index_cpu_to_all_gpus(index)


def set_param(index: faiss.Index, kind: str, params: dict) -> None:
    if kind == "hnsw" and "efSearch" in params:
        faiss.downcast_index(index.index).hnsw.efSearch = int(params["efSearch"])
    elif kind.startswith("ivf") and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def add(index: faiss.Index, vec_ids: np.ndarray, vectors: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Add vectors (the rows where mask is True)."""
    if mask is not None:
        vec_ids, vectors = vec_ids[mask], vectors[mask]
    if len(vec_ids):
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(vec_ids, dtype=np.int64))


def build_tuned(kind: str, source: Vectors, dim: int, target: float, seed: int = 0,
                log=lambda msg: None) -> tuple[faiss.Index, dict]:
    """Build `kind` over a source of unit vectors, tune its search parameter to `target` recall@10;
    (index, record)."""
    t0 = time.perf_counter()
    n = len(source.ids)
    index, params = empty(kind, dim, n)
    record = {"kind": kind, "params": params, "target_recall": target, "recall_at_10": 1.0, "tuned_on": 0}
    if kind == "flat" or n < 100:
        if kind.startswith("ivf"):
            record.update(train(index, kind, source, seed))
        for ids, vecs in source.chunks():
            add(index, ids, vecs)
        record["build_seconds"] = time.perf_counter() - t0
        return index, record
    rng = np.random.default_rng(seed)
    held = np.zeros(n, bool)
    held[rng.choice(n, min(TUNE_QUERIES, n // 10), replace=False)] = True
    held_ids = source.ids[held]
    log(f"training/building {kind} on {n - held.sum()} vectors ...")
    if kind.startswith("ivf"):
        record.update(train(index, kind, source, seed, exclude=held))
    queries = source.fetch(held_ids)
    truth = TopK(len(queries), 10)
    held_set = set(held_ids.tolist())
    for ids, vecs in source.chunks():          # one pass: add the rest, and find the queries' exact top 10 in it
        keep = np.fromiter((i not in held_set for i in ids.tolist()), bool, len(ids))
        add(index, ids, vecs, mask=keep)
        truth.update(queries @ vecs[keep].T, ids[keep])
    truth = truth.ids()
    ladder = EF_LADDER if kind == "hnsw" else [p for p in NPROBE_LADDER if p <= params["nlist"]]
    name = "efSearch" if kind == "hnsw" else "nprobe"
    for value in ladder:
        set_param(index, kind, {name: value})
        got = refined_search(index, kind, queries, 10, source.fetch)[1]
        recall = recall_at(got, truth)
        log(f"  {name}={value}: recall@10 {recall:.4f}")
        record["params"][name], record["recall_at_10"] = value, recall
        if recall >= target:
            break
    record["target_reached"] = record["recall_at_10"] >= target   # False: the ladder's top did not get there
    record["tuned_on"] = int(held.sum())
    add(index, held_ids, queries)
    record["build_seconds"] = time.perf_counter() - t0
    return index, record


def refined_search(index: faiss.Index, kind: str, queries: np.ndarray, k: int, fetch,
                   params=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best: as the index ranks them, or for a compressed kind REFINE x k candidates
    re-scored exactly on the unit vectors `fetch(ids)` returns (the stored ones), -1 ids padding short rows.
    `params`: FAISS search parameters (a selector, nprobe)."""
    if kind not in REFINE:
        return index.search(queries, k, params=params)
    _, cand = index.search(queries, k * REFINE[kind], params=params)
    wanted = np.unique(cand[cand >= 0])
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    if not len(wanted):
        return out_s, out_i
    vectors = fetch(wanted)
    position = {int(v): i for i, v in enumerate(wanted)}
    for r, row in enumerate(cand):
        row = row[row >= 0]
        scores = vectors[[position[int(i)] for i in row]] @ queries[r]
        order = np.argsort(-scores, kind="stable")[:k]
        out_s[r, :len(order)], out_i[r, :len(order)] = scores[order], row[order]
    return out_s, out_i


def recall_at(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got.tolist(), truth.tolist())]))


class TopK:
    """The k best scores per query, merged chunk by chunk (memory: one chunk of scores)."""

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.scores = np.full((n_queries, 0), -np.inf, np.float32)
        self._ids = np.zeros((n_queries, 0), np.int64)

    def update(self, scores: np.ndarray, ids: np.ndarray) -> None:
        s_all = np.concatenate([self.scores, scores], 1)
        i_all = np.concatenate([self._ids, np.broadcast_to(ids, scores.shape)], 1)
        top = np.argpartition(-s_all, min(self.k, s_all.shape[1] - 1), axis=1)[:, :self.k]
        self.scores, self._ids = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)

    def ids(self) -> np.ndarray:
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self._ids, order, 1)


def exact_topk(base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, k: int,
               exclude: np.ndarray | None = None, chunk: int = 100_000) -> np.ndarray:
    """Exact top-k ids by inner product, scanning base in chunks (memory: one chunk of scores)."""
    top = TopK(len(queries), k)
    for start in range(0, len(base), chunk):
        scores = queries @ np.ascontiguousarray(base[start:start + chunk], np.float32).T
        if exclude is not None:
            scores[:, exclude[start:start + chunk]] = -np.inf
        top.update(scores, base_ids[start:start + chunk])
    return top.ids()
