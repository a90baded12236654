"""The embed pipeline: source -> read + hash -> decode + preprocess -> backbone -> store.

Reading and decoding run in worker threads, a bounded window ahead of inference (Pillow and ONNX Runtime release
the GIL), so memory stays flat. Each batch is written in one transaction as soon as it is computed: a killed run
loses at most the batch in flight, and a rerun does only what is missing. Files whose path, size and mtime are
unchanged are skipped without being read; files whose bytes are already embedded (copies, renames) are recorded
without running the backbone.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .catalog import Preprocess
from .decode import decode_image
from .errors import DecodeError
from .hashing import content_hash
from .index import is_current, refresh
from .preprocess import crop_resize, draft_target, normalise
from .source import SourceFile, display_path
from .store import EmbeddingSet, Store


@dataclass
class Prepared:
    """A file after the read/decode stage: its hash and pixels, or the reason it failed."""

    file: SourceFile
    hash: str | None = None
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    seconds: float = 0.0


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
    stage_seconds: dict = field(default_factory=lambda: {"read+decode": 0.0, "inference": 0.0, "write": 0.0})
    model: str = ""
    set_id: str = ""
    device: str = ""
    task: str | None = None
    unit: str = "image"
    truncated: int = 0            # texts cut at the model's token limit (flagged in the store)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def read_pixels(path: str, p: Preprocess, known: set | None = None) -> Prepared:
    """Read, hash, decode and crop/resize one file (the pipeline's worker step). Never raises for bad input."""
    t0 = time.perf_counter()
    out = Prepared(file=None)  # type: ignore[arg-type]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        out.error = "file vanished before it could be read"
    except IsADirectoryError:
        out.error = "is a folder, not a file"
    except OSError as exc:
        out.error = f"cannot read file: {exc.strerror or exc}"
    else:
        out.hash = content_hash(data)
        if known is None or out.hash not in known:
            try:
                img = decode_image(data, draft_to=draft_target(p))
                out.width, out.height = img.size
                out.pixels = crop_resize(img, p)
            except DecodeError as exc:
                out.error = str(exc)
    out.seconds = time.perf_counter() - t0
    return out


def embed_files(store: Store, files: list[SourceFile], backbone: Backbone, eset: EmbeddingSet, pre: Preprocess,
                batch_size: int = 32, workers: int | None = None, retry_failed: bool = False,
                progress: bool = True) -> EmbedSummary:
    """Embed every file not yet in the set; record failures; refresh the set's index at the end."""
    from tqdm import tqdm

    started = time.perf_counter()
    summary = EmbedSummary(listed=len(files), model=eset.model, set_id=eset.set_id, device=backbone.device)
    store.ensure_set(eset)
    known_items = store.items_by_path()
    embedded = store.embedded_hashes(eset)

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

    batch_hashes: list[str] = []
    batch_pixels: list[np.ndarray] = []
    pending: list[dict] = []       # item rows waiting for the next write

    def flush() -> None:
        vectors = None
        if batch_pixels:
            t0 = time.perf_counter()
            vectors = backbone.run(normalise(np.stack(batch_pixels), pre))
            summary.stage_seconds["inference"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.write_batch(eset, pending, batch_hashes, vectors)
        summary.stage_seconds["write"] += time.perf_counter() - t0
        summary.embedded += len(batch_hashes)
        embedded.update(batch_hashes)
        batch_hashes.clear(), batch_pixels.clear(), pending.clear()

    workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for f, prep in _bounded_map(pool, lambda f: _prepare(f, pre, embedded), todo, window=2 * batch_size):
            summary.stage_seconds["read+decode"] += prep.seconds
            row = {"path": f.key, "hash": prep.hash, "size": f.size, "mtime": f.mtime,
                   "width": prep.width, "height": prep.height, "status": "ok", "error": None}
            if prep.error:
                row.update(status="failed", error=prep.error)
                summary.failed += 1
                summary.failures.append((f.key, prep.error))
            elif prep.hash in embedded or prep.hash in batch_hashes:
                summary.copies += 1
            else:
                batch_hashes.append(prep.hash)
                batch_pixels.append(prep.pixels)
            pending.append(row)
            if len(batch_pixels) >= batch_size or len(pending) >= 8 * batch_size:
                flush()
            bar.update(1)
        if pending:
            flush()
    bar.close()
    if not is_current(store, eset):
        refresh(store, eset)
    summary.seconds = time.perf_counter() - started
    return summary


def _prepare(f: SourceFile, pre: Preprocess, known: set) -> Prepared:
    if f.error:
        return Prepared(file=f, error=f.error)
    prep = read_pixels(f.path, pre, known)
    prep.file = f
    return prep


def _bounded_map(pool, fn, items, window: int):
    """Like pool.map, in order, but never more than `window` results in flight (memory stays flat)."""
    queue: deque = deque()
    it = iter(items)
    for item in it:
        queue.append((item, pool.submit(fn, item)))
        if len(queue) >= window:
            break
    while queue:
        item, fut = queue.popleft()
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))
        yield item, fut.result()


def embed_query(path: str, backbone: Backbone, pre: Preprocess) -> tuple[np.ndarray, str]:
    """One file's vector and content hash, without touching a store (search by example)."""
    prep = read_pixels(path, pre)
    if prep.error:
        raise DecodeError(f"{display_path(path)}: {prep.error}")
    return backbone.run(normalise(prep.pixels[None], pre))[0], prep.hash
