"""Write: the pipeline's last stage, in its own thread, so inference never waits on DuckDB.

Batches go through a short queue (bounded: memory stays flat) to one thread that owns the store's connection while
the run lasts. The thread writes the batches waiting for it as one transaction: it takes the next batch, then
every batch already queued behind it, until it holds GROUP_ITEMS items, and commits them together. A producer
slower than the writer so sees each batch committed as soon as it arrives (one transaction per batch, no added
wait); a fast one, whose batches pile up in the queue, pays DuckDB's per-transaction cost (the commit, the synced
log) once per group, and its groups fill whole DuckDB row groups, which go straight into the store's file rather
than through the log and a checkpoint later (see Store.bulk_writes), their vectors uncompressed, since
compressing would slow the writer by 15-30% (a full group is a bulk write to Store.write_batch). A kill loses at
most the batches in flight (the queue, QUEUE_BATCHES deep, and the group being written); everything committed stays, and a rerun embeds the rest. An
error in the writer stops the run at the next batch and is raised in the caller's thread.
"""
from __future__ import annotations

import importlib
import queue
import threading
import time
from contextlib import ExitStack

import numpy as np

from featstore.store.db import BULK_VECTORS, EmbeddingSet, Store

QUEUE_BATCHES = 32        # batches the producer may be ahead of the writer (vectors and rows only: 21 MB at
                          # 128 x 1280-d)
GROUP_ITEMS = BULK_VECTORS   # a transaction takes queued batches until it holds this many items


class BatchWriter:
    def __init__(self, store: Store, eset: EmbeddingSet, depth: int = QUEUE_BATCHES, group_items: int | None = None):
        self.store, self.eset = store, eset
        self.group_items = GROUP_ITEMS if group_items is None else group_items
        self.seconds = 0.0          # time spent writing (in the writer thread)
        self.waited = 0.0           # time the producer spent blocked on a full queue
        self.transactions = 0       # groups committed
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="featstore-writer", daemon=True)
        self._settings = ExitStack()

    def __enter__(self) -> "BatchWriter":
        self._settings.enter_context(self.store.bulk_writes())     # for the run: fewer DuckDB checkpoints
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        t0 = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
        self._settings.close()
        self.waited += time.perf_counter() - t0
        if self._error is not None and exc_type is None:
            raise self._error

    def put(self, rows: list[dict], hashes: list[str], vectors, texts=None) -> None:
        if self._error is not None:
            raise self._error
        t0 = time.perf_counter()
        self._queue.put((rows, hashes, vectors, texts))
        self.waited += time.perf_counter() - t0

    def _loop(self) -> None:
        try:                                   # the store's vector insert uses it: imported while batch 1 is made
            importlib.import_module("pyarrow")
        except ImportError as exc:
            self._error = exc                  # raised at the producer's next put, like any write error
        done = False
        while not done:
            group, done = self._next_group()
            if not group or self._error is not None:
                continue                     # drain: the producer sees the error at its next put
            t0 = time.perf_counter()
            try:
                self.store.write_batch(self.eset, *merge(group))
                self.transactions += 1
            except BaseException as exc:     # noqa: BLE001  (re-raised in the producer's thread)
                self._error = exc
            self.seconds += time.perf_counter() - t0

    def _next_group(self) -> tuple[list[tuple], bool]:
        """The batches of the next transaction (the next one, waited for, and those already queued behind it, up
        to group_items items), and whether the run's end was reached."""
        job = self._queue.get()
        if job is None:
            return [], True
        group, n = [job], _size(job)
        while n < self.group_items:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return group, True
            group.append(job)
            n += _size(job)
        return group, False


def _size(job: tuple) -> int:
    rows, hashes = job[0], job[1]
    return max(len(rows), len(hashes))


def merge(jobs: list[tuple]) -> tuple[list[dict], list[str], np.ndarray | None, list[tuple] | None]:
    """Several batches as one (rows, hashes, vectors, texts), in order; a path in two batches keeps its last row."""
    rows = list({r["path"]: r for job in jobs for r in job[0]}.values())
    hashes = [h for job in jobs for h in job[1]]
    mats = [job[2] for job in jobs if job[2] is not None and len(job[1])]
    vectors = np.concatenate(mats) if mats else None
    texts = [t for job in jobs for t in (job[3] or ())] or None
    return rows, hashes, vectors, texts
