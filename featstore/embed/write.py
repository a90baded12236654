"""Write: the pipeline's last stage, in its own thread, so inference never waits on DuckDB.

Batches go through a short queue (bounded: memory stays flat) to one thread that owns the store's connection while
the run lasts; each batch is still one transaction. An error in the writer stops the run at the next batch and is
raised in the caller's thread.
"""
from __future__ import annotations

import queue
import threading
import time

from featstore.store.db import EmbeddingSet, Store


class BatchWriter:
    def __init__(self, store: Store, eset: EmbeddingSet, depth: int = 2):
        self.store, self.eset = store, eset
        self.seconds = 0.0          # time spent writing (in the writer thread)
        self.waited = 0.0           # time the producer spent blocked on a full queue
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="featstore-writer", daemon=True)

    def __enter__(self) -> "BatchWriter":
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        t0 = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
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
        while (job := self._queue.get()) is not None:
            if self._error is not None:
                continue                     # drain: the producer sees the error at its next put
            t0 = time.perf_counter()
            try:
                self.store.write_batch(self.eset, *job)
            except BaseException as exc:     # noqa: BLE001  (re-raised in the producer's thread)
                self._error = exc
            self.seconds += time.perf_counter() - t0
