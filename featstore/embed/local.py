"""The embed pipeline, one stage per function, in the order the data flows:

    plan    (source)  which listed files need work: unchanged files are skipped without being read
    decode  (workers) read + hash + decode + crop/resize, a bounded window ahead: in a thread pool, or on a GPU
                      machine in worker processes that write into shared memory (decode_pool.py)
    batch   (main)    pixels into a preallocated batch buffer; copies of stored content need no backbone
    run     (main)    normalise (on the host, or inside the graph on CUDA), run the backbone
    write   (writer)  one transaction per batch, in its own thread (writer.py)

Pillow, ONNX Runtime and DuckDB release the GIL, so decode and write overlap inference; the window and the
writer's queue are bounded, so memory stays flat whatever the folder size. A killed run loses at most the batches
in flight and a rerun does only what is missing. Every stage is timed per batch; the summary says where the time
went, and each run is recorded in the store with its settings.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from featstore.embed.run import DEFAULT_BATCH, Backbone
from featstore.models.catalog import Preprocess
from featstore.embed.decode import decode_image, max_file_bytes, too_big
from featstore.errors import DecodeError, FeatstoreError
from featstore.hashing import content_hash
from featstore.search.index import is_current, refresh
from featstore.models.preprocess import crop_resize, draft_target
from featstore.embed.source import SourceFile, display_path, not_regular
from featstore.store.db import EmbeddingSet, Store
from featstore.uri import is_uri, read_bytes
from featstore.embed.write import BatchWriter


@dataclass
class Prepared:
    """A file after the decode stage: its hash and pixels, or the reason it failed."""

    file: SourceFile
    hash: str | None = None
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    seconds: float = 0.0          # CPU time of the worker thread (wall time would count waits for a core)


@dataclass
class EmbedSummary:
    listed: int = 0
    embedded: int = 0             # backbone ran on these
    already: int = 0              # unchanged and stored before this run
    copies: int = 0               # new paths whose bytes were already embedded (copies, moves, renames)
    failed: int = 0               # failed in this run
    failed_before: int = 0        # unchanged files that failed in an earlier run (use --retry-failed)
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
    unit: str = "image"
    truncated: int = 0            # texts cut at the model's token limit (flagged in the store)

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


def read_pixels(path: str, p: Preprocess, known: set | None = None) -> Prepared:
    """Read, hash, decode and crop/resize one file (the decode stage's unit of work). Never raises for bad input.

    A file whose hash is in `known` (already embedded) is hashed but not decoded.
    """
    t0 = time.thread_time()
    out = Prepared(file=None)  # type: ignore[arg-type]
    try:
        data = read_bytes(path) if is_uri(path) else _read_local(path)
    except DecodeError as exc:    # refused before decoding: not a regular file, too big, changed while read
        out.error = str(exc)
    except FileNotFoundError:
        out.error = "file vanished before it could be read"
    except IsADirectoryError:
        out.error = "is a folder, not a file"
    except OSError as exc:
        out.error = f"cannot read file: {exc.strerror or exc}"
    except FeatstoreError:
        raise
    except Exception as exc:      # noqa: BLE001  (an fsspec backend's own error for one URL: that item fails)
        out.error = f"cannot read URL: {str(exc) or type(exc).__name__}"
    else:
        out.hash = content_hash(data)
        if known is None or out.hash not in known:
            try:
                img = decode_image(data, draft_to=draft_target(p))
                out.width, out.height = img.size
                out.pixels = crop_resize(img, p)
            except DecodeError as exc:
                out.error = str(exc)
    out.seconds = time.thread_time() - t0
    return out


def _read_local(path: str) -> bytes:
    """The file's bytes, at most max_file_bytes() of them, as one snapshot: a file that is not regular when opened
    (O_NONBLOCK: a FIFO put there since the listing does not block) or changes size while read is refused."""
    cap = max_file_bytes()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind:
            raise DecodeError(f"not a regular file ({kind}), not read")
        if st.st_size > cap:
            raise too_big()
        data = f.read(cap + 1)
        if len(data) > cap:
            raise too_big()
        if len(data) != st.st_size or os.fstat(fd).st_size != st.st_size:
            raise DecodeError(f"file changed while it was read ({st.st_size} bytes when opened, {len(data)} read)")
        return data


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


# ---- decode (worker threads) ------------------------------------------------------------------------------------
def decoded(todo: list[SourceFile], pre: Preprocess, known: set, workers: int, window: int, clock: Clock):
    """Prepared files in listing order, decoded by `workers` threads at most `window` files ahead."""
    def work(f: SourceFile) -> Prepared:
        prep = Prepared(file=f, error=f.error) if f.error else read_pixels(f.path, pre, known)
        prep.file = f
        return prep

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featstore-decode") as pool:
        pending: deque = deque()
        it = iter(todo)
        for f in it:
            pending.append(pool.submit(work, f))
            if len(pending) >= window:
                break
        while pending:
            t0 = time.perf_counter()
            prep = pending.popleft().result()
            clock.add("waiting for decode", time.perf_counter() - t0)
            clock.add("decode CPU (workers)", prep.seconds)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(work, nxt))
            yield prep


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
    def full(self) -> bool:
        return len(self.hashes) == len(self.pixels)

    def clear(self) -> None:
        self.hashes, self.rows = [], []


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
        else:
            batch.add(prep)
            embedded.add(prep.hash)         # later copies in this run are recognised as copies
        batch.rows.append(row)
        bar.update(1)
        if batch.full or len(batch.rows) >= 8 * len(batch.pixels):
            yield batch
            batch.clear()
    if batch.rows:
        yield batch
        batch.clear()


# ---- the pipeline ----------------------------------------------------------------------------------------------
def run_stages(todo: list[SourceFile], backbone: Backbone, pre: Preprocess, known: set, embedded: set,
               batch_size: int, workers: int, summary: EmbedSummary, clock: Clock, bar, sink,
               processes: bool = False) -> None:
    """decode -> batch -> run, handing each batch's (item rows, new hashes, vectors) to `sink` (the store's writer
    here; a shard file in the Ray engine). `known`: contents stored before the run (their files are hashed, not
    decoded: a fixed snapshot, so what is decoded does not depend on thread timing); `embedded` grows as contents
    are batched, so later copies in the run are recognised."""
    from featstore.embed import decode_pool

    stream = (decode_pool.decoded if processes else decoded)(todo, pre, known, workers, 2 * batch_size, clock)
    for batch in batches(stream, Batch(batch_size, pre), embedded, summary, bar):
        vectors = None
        if batch.hashes:
            t0 = time.perf_counter()
            n = len(batch.hashes)
            vectors = backbone.run_pixels(batch.pixels[:n], pre)
            clock.add("inference", time.perf_counter() - t0)
            clock.batches += 1
            summary.embedded += n
        sink(batch.rows, batch.hashes, vectors)


def embed_files(store: Store, files: list[SourceFile], backbone: Backbone, eset: EmbeddingSet, pre: Preprocess,
                batch_size: int | None = None, workers: int | None = None, decode: str = "auto",
                retry_failed: bool = False, progress: bool = True, source: str = "") -> EmbedSummary:
    """Embed every file not yet in the set; record failures; refresh the set's index; record the run.
    decode: 'threads', 'processes' or 'auto' (processes when the backbone runs on CUDA and there is enough to do)."""
    from tqdm import tqdm

    started, wall0 = time.time(), time.perf_counter()
    summary = EmbedSummary(listed=len(files), model=eset.model, set_id=eset.set_id, device=backbone.device,
                           precision=eset.precision)
    store.ensure_set(eset)
    embedded = store.embedded_hashes(eset)
    todo = plan(store, embedded, files, summary, retry_failed)
    batch_size = batch_size or DEFAULT_BATCH[backbone.device]
    workers = workers or os.cpu_count() or 1
    processes = decode == "processes" or (decode == "auto" and backbone.device == "cuda" and workers > 2
                                          and len(todo) > 4 * batch_size)
    clock = Clock()
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.1)
    with BatchWriter(store, eset) as writer:
        run_stages(todo, backbone, pre, set(embedded), embedded, batch_size, workers, summary, clock, bar, writer.put,
                   processes)
    bar.close()
    summary.stage_seconds = clock.seconds
    summary.batches = clock.batches
    config = {"batch_size": batch_size, "decode_workers": workers, "decode_window": 2 * batch_size,
              "decode": "processes" if processes else "threads", "precision": eset.precision} | backbone.config()
    return finish_run(store, eset, summary, config, source, started, wall0, writer)


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
    keys = ("listed", "embedded", "already", "copies", "failed", "failed_before", "seconds", "batches",
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
