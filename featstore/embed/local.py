"""The embed pipeline, one stage per function, in the order the data flows:

    plan    (source)  which listed files need work: unchanged files are skipped without being read
    decode  (workers) read + hash + decode + crop/resize, a bounded window ahead (decode.py): in a thread pool,
                      or on a GPU machine on the device (decode_device.py: nvImageCodec), or in worker processes
                      that write into shared memory (decode_pool.py)
    batch   (main)    pixels into a preallocated batch buffer (on the device, with device decode); copies of
                      stored content need no backbone
    run     (main)    normalise (on the host, or inside the graph on CUDA), run the backbone (run.py)
    write   (writer)  one transaction per batch, in its own thread (write.py)

Pillow, ONNX Runtime and DuckDB release the GIL, so decode and write overlap inference; the window and the
writer's queue are bounded, so memory stays flat whatever the folder size. A killed run loses at most the batches
in flight and a rerun does only what is missing. Every stage is timed per batch; the summary says where the time
went, and each run is recorded in the store with its settings.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from featstore.embed.run import DEFAULT_BATCH, Backbone
from featstore.models.catalog import Preprocess
from featstore.embed import decode_choice
from featstore.embed.decode import Prepared, decoded, read_pixels
from featstore.errors import DecodeError
from featstore.store.index import is_current, refresh
from featstore.embed.source import SourceFile
from featstore.paths import display_path
from featstore.store.db import EmbeddingSet, Store
from featstore.embed.write import BatchWriter
from featstore.store.vanished import Scope, mark_vanished


@dataclass
class EmbedSummary:
    listed: int = 0
    embedded: int = 0             # backbone ran on these
    already: int = 0              # unchanged and stored before this run
    copies: int = 0               # new paths whose bytes were already embedded (copies, moves, renames)
    failed: int = 0               # failed in this run
    failed_before: int = 0        # unchanged files that failed in an earlier run (use --retry-failed)
    removed: int = 0              # stored items that vanished from the source: marked removed (vanished.py)
    removed_paths: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)   # where the time went (see Clock)
    batches: int = 0
    config: dict = field(default_factory=dict)          # device, providers, threads, batch size, workers, ...
    model: str = ""
    set_id: str = ""
    precision: str = "fp32"
    device: str = ""
    task: str | None = None
    label_source: str = ""        # where the labels came from, as the summary says it
    labelled: int = 0             # items of the source that carry a label of `task`
    unit: str = "image"
    truncated: int = 0            # texts cut at the model's token limit (flagged in the store)
    cut: object = None            # with --cut: the activation pass's CutSummary (embed/cut_run.py)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


class Clock:
    """Per-stage time of one run. Main-thread stages (waiting for decode, inference, waiting for the writer) add
    up to the wall time; decode and write run in other threads or processes, overlapped, reported beside them."""

    def __init__(self):
        self.seconds = {"inference": 0.0, "waiting for decode": 0.0, "waiting for writer": 0.0,
                        "decode CPU (workers)": 0.0, "write (writer thread)": 0.0}
        self.batches = 0                          # backbone calls

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


# ---- plan (source) --------------------------------------------------------------------------------------------
def plan(store: Store, embedded: set, files: list[SourceFile], summary: EmbedSummary,
         retry_failed: bool) -> list[SourceFile]:
    """The files that need reading: not those unchanged (path, size, mtime) since an earlier run whose content is
    among `embedded` (the set's stored hashes)."""
    known_items = store.items_by_path()
    todo = []
    for f in files:
        item = known_items.get(f.key)
        unchanged = item is not None and item.size == f.size and item.mtime == f.mtime and f.error is None
        if unchanged and item.status == "ok" and item.hash in embedded:
            summary.already += 1
        elif unchanged and item.status == "failed" and not retry_failed:
            summary.failed_before += 1
        else:
            todo.append(f)
    return todo


# ---- batch (main thread) -------------------------------------------------------------------------------------
class Batch:
    """A preallocated uint8 NHWC buffer filled in place, plus the item rows that ride along with it."""

    def __init__(self, size: int, pre: Preprocess):
        self.pixels = np.empty((size, pre.size, pre.size, 3), np.uint8)
        self.hashes: list[str] = []
        self.rows: list[dict] = []

    def add(self, prep: Prepared) -> None:
        self.pixels[len(self.hashes)] = prep.pixels
        self.hashes.append(prep.hash)

    @property
    def capacity(self) -> int:
        return len(self.pixels)

    @property
    def full(self) -> bool:
        return len(self.hashes) == self.capacity

    def clear(self) -> None:
        self.hashes, self.rows = [], []

    def skip(self, prep: Prepared) -> None:
        """A decoded file the batch does not take (a copy of content already batched)."""

    def run(self, backbone: Backbone, pre: Preprocess) -> np.ndarray:
        return backbone.run_pixels(self.pixels[:len(self.hashes)], pre)


def batches(prepared, batch: Batch, embedded: set, summary: EmbedSummary, bar):
    """Fill `batch` from the decoded stream and yield it when it is full (or when many rows wait without pixels:
    copies and failures are recorded promptly too). The caller consumes it before the next fill."""
    for prep in prepared:
        f = prep.file
        row = {"path": f.key, "hash": prep.hash, "size": f.size, "mtime": f.mtime,
               "width": prep.width, "height": prep.height, "status": "ok", "error": None}
        if prep.error:
            row.update(status="failed", error=prep.error)
            summary.failed += 1
            summary.failures.append((f.key, prep.error))
        elif prep.hash in embedded:
            summary.copies += 1
            batch.skip(prep)
        else:
            batch.add(prep)
            embedded.add(prep.hash)         # later copies in this run are recognised as copies
        batch.rows.append(row)
        bar.update(1)
        if batch.full or len(batch.rows) >= 8 * batch.capacity:
            yield batch
            batch.clear()
    if batch.rows:
        yield batch
        batch.clear()


# ---- the pipeline ----------------------------------------------------------------------------------------------
def run_stages(todo: list[SourceFile], backbone: Backbone, pre: Preprocess, known: set, embedded: set,
               batch_size: int, workers: int, summary: EmbedSummary, clock: Clock, bar, sink,
               decode: str = "threads") -> dict:
    """decode -> batch -> run, handing each batch's (item rows, new hashes, vectors) to `sink` (the store's writer
    here; a shard file in the Ray engine). `known`: contents stored before the run (their files are hashed, not
    decoded: a fixed snapshot, so what is decoded does not depend on thread timing); `embedded` grows as contents
    are batched, so later copies in the run are recognised. decode: 'threads', 'processes' or 'device'
    (decode_device.py: nvImageCodec, the batch on the backbone's device). Returns what the run records about
    its decoding beyond the mode (device decode: how many images each decoder took)."""
    from featstore.embed import decode_device, decode_pool, device_batch

    window = 2 * batch_size
    if decode == "device":
        decoder = decode_device.open_decoder(pre, backbone.device, window, batch_size)
        stream = decode_device.device_decoded(todo, pre, known, workers, window, clock, decoder)
        batch = device_batch.DeviceBatch(batch_size, decoder.ring, device_batch.gathering_backbone(backbone, pre))
    else:
        stream = (decode_pool.decoded if decode == "processes" else decoded)(todo, pre, known, workers, window, clock)
        batch = Batch(batch_size, pre)
    for batch in batches(stream, batch, embedded, summary, bar):
        vectors = None
        if batch.hashes:
            t0 = time.perf_counter()
            n = len(batch.hashes)
            vectors = batch.run(backbone, pre)
            clock.add("inference", time.perf_counter() - t0)
            clock.batches += 1
            summary.embedded += n
        sink(batch.rows, batch.hashes, vectors)
    if decode == "device":
        return {"decoded_on_device": decoder.on_device, "decoded_on_cpu": decoder.on_cpu}
    return {}


def embed_files(store: Store, files: list[SourceFile], backbone: Backbone, eset: EmbeddingSet, pre: Preprocess,
                batch_size: int | None = None, workers: int | None = None, decode: str = "auto",
                retry_failed: bool = False, progress: bool = True, source: str = "",
                scope: Scope | None = None) -> EmbedSummary:
    """Embed every file not yet in the set; record failures; mark what vanished from `scope` (the folder listed)
    removed; refresh the set's index; record the run.
    decode: 'threads', 'processes', 'device' or 'auto' (see decode_choice.py)."""
    from tqdm import tqdm

    started, wall0 = time.time(), time.perf_counter()
    summary = EmbedSummary(listed=len(files), model=eset.model, set_id=eset.set_id, device=backbone.device,
                           precision=eset.precision)
    store.ensure_set(eset)
    record_vanished(store, scope, summary)
    embedded = store.embedded_hashes(eset)
    todo = plan(store, embedded, files, summary, retry_failed)
    batch_size = batch_size or DEFAULT_BATCH[backbone.device]
    workers = workers or os.cpu_count() or 1
    decode, why, rates = decode_choice.choose(decode, backbone, pre, todo, batch_size, workers)
    clock = Clock()
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.1)
    with BatchWriter(store, eset) as writer:
        decoding = run_stages(todo, backbone, pre, set(embedded), embedded, batch_size, workers, summary, clock, bar,
                              writer.put, decode)
    bar.close()
    summary.stage_seconds = clock.seconds
    summary.batches = clock.batches
    config = {"batch_size": batch_size, "decode_workers": workers, "decode_window": 2 * batch_size,
              "decode": decode, "precision": eset.precision} | backbone.config() | decoding
    if why:
        config["decode_note"] = why
    if rates:
        config["decode_rates"] = rates
    return finish_run(store, eset, summary, config, source, started, wall0, writer)


def record_vanished(store: Store, scope: Scope | None, summary: EmbedSummary) -> None:
    summary.removed_paths = mark_vanished(store, scope)
    summary.removed = len(summary.removed_paths)


def finish_run(store: Store, eset: EmbeddingSet, summary: EmbedSummary, config: dict, source: str,
               started: float, wall0: float, writer: BatchWriter | None = None) -> EmbedSummary:
    """The end every embed run shares (images or text, local or Ray engine): the writer thread's times into the
    stage times, the set's index brought up to date, the run timed, then recorded in the store with its settings
    (featstore stats shows the latest). started: wall-clock start; wall0: perf_counter at the start."""
    if writer is not None:
        summary.stage_seconds["waiting for writer"] = writer.waited
        summary.stage_seconds["write (writer thread)"] = writer.seconds
    if not is_current(store, eset):
        refresh(store, eset)
    summary.seconds = time.perf_counter() - wall0
    summary.config = config
    keys = ("listed", "embedded", "already", "copies", "failed", "failed_before", "removed", "seconds", "batches",
            "stage_seconds", "truncated")
    store.record_run(eset, source, started, config,
                     {k: getattr(summary, k) for k in keys} | {"items_per_second": summary.images_per_second})
    return summary


def embed_query(path: str, backbone: Backbone, pre: Preprocess) -> tuple[np.ndarray, str]:
    """One file's vector and content hash, without touching a store (search by example)."""
    prep = read_pixels(path, pre)
    if prep.error:
        raise DecodeError(f"{display_path(path)}: {prep.error}")
    return backbone.run_pixels(prep.pixels[None], pre)[0], prep.hash
