"""The text embed pipeline: source rows -> hash -> tokenize (sorted by length) -> backbone -> store.

Same contract as the image pipeline (local.py): texts already stored under the same key and content are
skipped, identical texts are embedded once, bad rows are recorded as failed and the run goes on, every batch is
one transaction. Texts are sorted by token count inside each chunk, so a batch pads to similar lengths.
"""
from __future__ import annotations

import time

import numpy as np

from featstore.embed.run import Backbone
from featstore.embed.local import EmbedSummary, finish_run, record_vanished
from featstore.hashing import content_hash
from featstore.store.db import EmbeddingSet, Store
from featstore.embed.text_source import TextRecord
from featstore.models.tokenize import TextTokenizer
from featstore.embed.write import BatchWriter

CHUNK = 4096        # texts tokenized and length-sorted together (bounds memory)


def embed_texts(store: Store, records: list[TextRecord], backbone: Backbone, eset: EmbeddingSet,
                tokenizer: TextTokenizer, batch_size: int = 64, retry_failed: bool = False,
                progress: bool = True, source: str = "", scope=None) -> EmbedSummary:
    """scope: what the source covers (vanished.py); its stored texts no longer in it are marked removed."""
    from tqdm import tqdm

    started_at, started = time.time(), time.perf_counter()
    summary = EmbedSummary(listed=len(records), model=eset.model, set_id=eset.set_id, device=backbone.device,
                           unit="text", precision=eset.precision,
                           stage_seconds={"read+tokenize": 0.0, "inference": 0.0})
    store.ensure_set(eset)
    record_vanished(store, scope, summary)
    known = store.items_by_path()
    embedded = store.embedded_hashes(eset)
    bar = tqdm(total=len(records), unit="text", disable=not progress or not records, dynamic_ncols=True)
    with BatchWriter(store, eset) as writer:
        _run(records, backbone, tokenizer, batch_size, retry_failed, known, embedded, summary, bar, writer.put)
    bar.close()
    config = {"batch_size": batch_size, "precision": eset.precision, "chunk": CHUNK} | backbone.config()
    return finish_run(store, eset, summary, config, source, started_at, started, writer)


def _run(records, backbone, tokenizer, batch_size, retry_failed, known, embedded, summary, bar, sink) -> None:
    """hash -> tokenize (length-sorted per chunk) -> run, handing (rows, hashes, vectors, texts) to `sink`."""
    for start in range(0, len(records), CHUNK):
        chunk = records[start:start + CHUNK]
        t0 = time.perf_counter()
        rows, new = [], {}                      # item rows written up front; new: hash -> (text, its rows)
        for r in chunk:
            h = content_hash(r.text.encode("utf-8")) if r.text is not None else None
            item = known.get(r.key)
            row = {"path": r.key, "hash": h, "size": r.size, "mtime": r.mtime, "width": None, "height": None,
                   "status": "ok", "error": None}
            if r.error:
                if item is not None and item.status == "failed" and item.error == r.error and not retry_failed:
                    summary.failed_before += 1
                    continue
                row.update(status="failed", error=r.error)
                summary.failed += 1
                summary.failures.append((r.key, r.error))
                rows.append(row)
            elif item is not None and item.status == "ok" and item.hash == h and h in embedded:
                summary.already += 1
            elif h in embedded:
                summary.copies += 1
                rows.append(row)
            elif h in new:
                summary.copies += 1
                new[h][1].append(row)
            else:
                new[h] = (r.text, [row])
        hashes = list(new)
        texts = [new[h][0] for h in hashes]
        lengths = tokenizer.lengths(texts) if texts else np.zeros(0, np.int64)
        order = np.argsort(-lengths, kind="stable")
        summary.stage_seconds["read+tokenize"] += time.perf_counter() - t0
        if rows:
            sink(rows, [], None, None)
        bar.update(len(chunk) - sum(len(v[1]) for v in new.values()))
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            t0 = time.perf_counter()
            enc = tokenizer.encode([texts[i] for i in idx])
            summary.stage_seconds["read+tokenize"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            vectors = backbone.run_feeds(enc.feeds)
            summary.stage_seconds["inference"] += time.perf_counter() - t0
            batch_hashes = [hashes[i] for i in idx]
            batch_rows = [row for h in batch_hashes for row in new[h][1]]
            info = [(h, texts[i], int(n), bool(t)) for h, i, n, t in zip(batch_hashes, idx, enc.lengths, enc.truncated)]
            sink(batch_rows, batch_hashes, vectors, info)
            embedded.update(batch_hashes)
            summary.embedded += len(batch_hashes)
            summary.truncated += int(enc.truncated.sum())
            bar.update(len(batch_rows))


def embed_query_text(text: str, backbone: Backbone, tokenizer: TextTokenizer) -> np.ndarray:
    """One query text's vector (not stored)."""
    return backbone.run_feeds(tokenizer.encode([text]).feeds)[0]
