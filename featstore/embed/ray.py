"""The Ray engine: the same embed stages, run shard by shard in a Ray Data actor pool, ingested as shards finish.

    driver: list -> shards (shards.py) -> skip shards already ingested or all-unchanged -> ingest shards staged by
            an earlier run -> Ray Data over the rest -> ingest each finished shard (ingest.py) -> index
    actor:  (one ONNX Runtime session per actor, loaded once) a shard's files through embed.run_stages -- the
            local engine's decode, batch and run code -- into one staged Parquet file

An actor opens the set's own ONNX file where it sees it unchanged (one machine, a shared file system); elsewhere
the backbone travels as bytes through Ray's object store (checked by SHA-256 on arrival) into a temporary file,
removed once the session has loaded it. So workers need featstore installed but neither the weight packages nor
torch. Staged files must be on storage the
driver and every worker see (a local folder for a one-machine Ray; a shared file system on a cluster). Killing
the driver loses only the shards in flight: a rerun finds the staged files (never recomputed) and the ingested
shards (never re-ingested), and redoes the rest.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from featstore.embed.backbones import session_for
from featstore.embed.run import DEFAULT_BATCH, Backbone
from featstore.models.catalog import Preprocess
from featstore.embed.local import Clock, EmbedSummary, finish_run, plan, record_vanished, run_stages
from featstore.errors import FeatstoreError
from featstore.hashing import file_sha256
from featstore.logs import quiet_stderr, verbose
from featstore.embed.ingest import ingest, is_ingested
from featstore.embed.shards import Shard, Staging, make_shards
from featstore.uri import is_uri, join
from featstore.embed.source import SourceFile
from featstore.store.db import EmbeddingSet, Store


class ShardEmbedder:
    """A Ray Data actor: one backbone session, many shards."""

    def __init__(self, onnx_ref, onnx_sha256: str, onnx_path: str, preprocess: dict, dim: int, staging: str,
                 known: frozenset, device: str, threads: int | None, batch_size: int, workers: int | None):
        import ray

        known = ray.get(known)      # an ObjectRef: shipped once per actor
        threads = threads or os.cpu_count() or 1
        self.pre, self.dim, self.staging = Preprocess.from_dict(preprocess), dim, Staging(staging)
        # the set's own graph; on CUDA the actor fuses its pixel input here, as the local engine does
        with graph_file(onnx_ref, onnx_sha256, onnx_path) as path:
            self.backbone = session_for(path, device, self.pre, threads=threads)
            self.backbone.session  # noqa: B018  (load once, in the actor's constructor, while the file is there)
        self.known, self.batch_size, self.workers = known, batch_size, workers or threads

    def __call__(self, batch):
        out = {"index": [], "name": [], "embedded": [], "seconds": []}
        for row in batch.to_pylist():
            shard = Shard.from_row(row)
            t0 = time.perf_counter()
            embedded = embed_shard(shard, self.backbone, self.pre, self.known, self.dim, self.staging,
                                   self.batch_size, self.workers)
            out["index"].append(shard.index)
            out["name"].append(shard.name)
            out["embedded"].append(embedded)
            out["seconds"].append(time.perf_counter() - t0)
        return out


@contextmanager
def graph_file(onnx_ref, onnx_sha256: str, onnx_path: str):
    """The set's ONNX file where this worker sees it unchanged (one machine, a shared file system: nothing is
    written), else the bytes shipped through the object store (`onnx_ref`) in a temporary file, removed on exit."""
    import ray

    if os.path.isfile(onnx_path) and file_sha256(onnx_path) == onnx_sha256:
        yield Path(onnx_path)
        return
    onnx_bytes = ray.get(onnx_ref)
    if hashlib.sha256(onnx_bytes).hexdigest() != onnx_sha256:
        raise FeatstoreError("the backbone bytes arrived damaged (SHA-256 mismatch)")
    fd, path = tempfile.mkstemp(suffix=".onnx", prefix="featstore-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(onnx_bytes)
        yield Path(path)
    finally:
        os.unlink(path)


def embed_shard(shard: Shard, backbone: Backbone, pre: Preprocess, known: frozenset, dim: int, staging: Staging,
                batch_size: int, workers: int) -> int:
    """Run one shard through the local engine's stages into its staged Parquet file; returns vectors computed."""
    from tqdm import tqdm

    rows, vectors = [], {}

    def sink(batch_rows, hashes, vecs):
        rows.extend(dict(r) for r in batch_rows)
        if vecs is not None:
            vectors.update(zip(hashes, vecs))

    summary = EmbedSummary()
    run_stages(list(shard.files), backbone, pre, known, set(known), batch_size, workers, summary, Clock(),
               tqdm(disable=True), sink)
    labels = {f.key: f.label for f in shard.files}
    for r in rows:
        r["label"] = labels.get(r["path"])
    staging.put(shard, rows, vectors, dim)
    return len(vectors)


def embed_with_ray(store: Store, files: list[SourceFile], backbone: Backbone, eset: EmbeddingSet, pre: Preprocess,
                   staging: str | Path | None = None, shard_size: int = 1000, workers: int = 1,
                   address: str | None = None,
                   batch_size: int | None = None, progress: bool = True, source: str = "", log=print,
                   scope=None) -> EmbedSummary:
    try:
        import ray
    except ImportError:
        raise FeatstoreError("--engine ray needs Ray Data: pip install -c constraints.txt 'featstore[ray]'") from None

    started, wall0 = time.time(), time.perf_counter()
    summary = EmbedSummary(listed=len(files), model=eset.model, set_id=eset.set_id, device=backbone.device,
                           precision=eset.precision)
    store.ensure_set(eset)
    record_vanished(store, scope, summary)
    location = str(staging or store.root / "staging")
    staging = Staging(join(location, eset.set_id) if is_uri(location) else Path(location) / eset.set_id)
    shards = make_shards(files, eset.set_id, shard_size)
    pending = {f.key for f in plan(store, store.embedded_hashes(eset), files, EmbedSummary(), retry_failed=False)}
    counts = {"shards": len(shards), "ingested_before": 0, "unchanged": 0, "staged_before": 0, "computed": 0}
    todo, staged = [], []
    for shard in shards:
        if not any(f.key in pending for f in shard.files):
            counts["ingested_before" if is_ingested(store, eset, shard) else "unchanged"] += 1
        elif staging.valid(shard):
            staged.append(shard)
        else:
            todo.append(shard)
    counts["staged_before"] = len(staged)
    log(f"{len(shards)} shards of up to {shard_size} files: {counts['ingested_before']} ingested before, "
        f"{counts['unchanged']} unchanged, {len(staged)} staged by an earlier run (not recomputed), "
        f"{len(todo)} to compute")
    for shard in staged:
        _add(summary, _ingest(store, eset, shard, staging))
    if todo:
        batch_size = batch_size or DEFAULT_BATCH[backbone.device]
        gpus = 1 if backbone.device == "cuda" else 0
        _quiet_ray_data()
        if not ray.is_initialized():
            if not verbose():      # the driver's core worker logs to stderr from C++ (e.g. core_worker.cc lines)
                os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            with quiet_stderr():   # the C++ logger's own line at start ("Set ray log level from environment ...")
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                         **({} if address else {"num_cpus": os.cpu_count() or 1}))
        # one machine: its cores shared among the actors; a cluster: each actor uses its own node's cores
        threads = max(1, (os.cpu_count() or 1) // max(workers, 1)) if not address else None
        onnx_bytes = Path(eset.onnx_path).read_bytes()      # the set's graph, not a session's fused copy
        by_index = {s.index: s for s in todo}
        known = frozenset(store.embedded_hashes(eset))
        ds = ray.data.from_items([s.as_row() for s in todo], override_num_blocks=len(todo))
        results = ds.map_batches(
            ShardEmbedder, batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1, num_gpus=gpus,
            fn_constructor_kwargs={"onnx_ref": ray.put(onnx_bytes), "onnx_sha256": eset.onnx_sha256,
                                   "onnx_path": str(eset.onnx_path),
                                   "preprocess": eset.preprocess, "dim": eset.dim, "staging": str(staging),
                                   "known": ray.put(known), "device": backbone.device, "threads": threads,
                                   "batch_size": batch_size, "workers": threads})
        done = 0
        for row in results.iter_rows():
            shard = by_index[int(row["index"])]
            _add(summary, _ingest(store, eset, shard, staging))
            done += 1
            if progress:
                log(f"shard {done}/{len(todo)} ingested ({shard.name}, {int(row['embedded'])} vectors, "
                    f"{float(row['seconds']):.1f} s)")
        counts["computed"] = done
    summary.already = summary.listed - summary.embedded - summary.copies - summary.failed
    config = {"engine": "ray", "shard_size": shard_size, "workers": workers, "staging": str(staging),
              "address": address or "local", "shards": counts, "precision": eset.precision,
              "device": backbone.device}
    return finish_run(store, eset, summary, config, source, started, wall0)


def _ingest(store: Store, eset: EmbeddingSet, shard: Shard, staging: Staging) -> dict | None:
    with staging.local(shard) as path:
        if path is None:
            raise FeatstoreError(f"{staging}: the staged file of {shard.name} is gone; rerun to recompute it")
        return ingest(store, eset, shard, path, again=True)


def _quiet_ray_data() -> None:
    """featstore prints its own progress; Ray Data's bars and per-operator stats would bury it."""
    import logging

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if not verbose():      # e.g. "Token authentication is enabled ...", "Progress bars disabled ..."
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _add(summary: EmbedSummary, counts: dict | None) -> None:
    if counts is None:
        return
    summary.embedded += counts["embedded"]
    summary.copies += counts["copies"]
    summary.failed += counts["failed"]
    summary.failures += counts["failures"]
