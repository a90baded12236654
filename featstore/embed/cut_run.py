"""The --cut pass of an embed run: for the contents the pooled set holds and the activation set lacks, the
activation at the cut, per view, fp16 into the store (store/activations.py).

It runs after the pooled pass of the same run, over the same files: the pooled pipeline is left as it is, so its
vectors are those of a run without --cut bit for bit, at the price of reading and decoding each new image a second
time (about 1% of an embed's time on the CPU: 1.9 s of decode for 49 s of inference on the 900 flowers). Here each
image is read and decoded once for all its views: view 0 is the plain preprocessing, views 1.. seeded random
resized crops and flips (cut_views.py), all through the bottom graph (models/cuts.py) in one batch. Texts are
tokenized again and run through the text bottom graph. A re-run with the same cut and views skips the contents
already stored; a file changed since its pooled vector was made is skipped and listed as failed.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from featstore.embed.cut_views import augment_record, make_views
from featstore.embed.decode import in_order, read_hashed
from featstore.embed.run import Backbone
from featstore.errors import DecodeError
from featstore.hashing import file_sha256
from featstore.models.catalog import ModelSpec
from featstore.models.cuts import bottom_graph, cut_shape
from featstore.models.images import decode_image
from featstore.models.preprocess import draft_target, normalise
from featstore.store.activations import (ActivationSet, activation_set_for, ensure_activation_set, stored_hashes,
                                         write_activations)
from featstore.store.db import Store
from featstore.store.schema import EmbeddingSet

MAX_VIEWS = 64
IMAGES_PER_CALL = 32            # views per bottom-graph call, about (at least one image's views)


@dataclass
class CutSummary:
    cut: str
    views: int
    act_id: str = ""
    shape: tuple = ()
    embedded: int = 0            # contents whose activations were computed now
    already: int = 0             # stored before this run
    failed: int = 0
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    bytes_per_item: int = 0      # fp16 payload of one content, all views (text: at the token limit)
    unit: str = "image"

    @property
    def per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def activation_set(store: Store, spec: ModelSpec, eset: EmbeddingSet, cut: str, views: int, seed: int,
                   log=print) -> ActivationSet:
    """The activation set of this pooled set, cut, views and seed (registered in the store)."""
    onnx = bottom_graph(spec, cut, log=log)
    augment = augment_record(seed) if spec.modality == "image" else {"modality": "text"}
    if views == 1 and spec.modality == "image":
        augment = {"modality": "image", "seed": None, "view0": "plain preprocessing"}
    aset = activation_set_for(eset.set_id, eset.model, cut, cut_shape(spec, cut), views, augment, str(onnx),
                              file_sha256(onnx))
    ensure_activation_set(store, aset)
    return aset


def embed_cut_images(store: Store, files: list, spec: ModelSpec, eset: EmbeddingSet, cut: str, views: int = 1,
                     seed: int = 0, device: str = "auto", workers: int | None = None, progress: bool = True,
                     log=print) -> CutSummary:
    from tqdm import tqdm

    t_start = time.perf_counter()
    aset = activation_set(store, spec, eset, cut, views, seed, log)
    summary = CutSummary(cut, views, aset.act_id, aset.shape, bytes_per_item=aset.item_bytes * views)
    todo = _todo(store, eset, aset, [(f.key, f.path) for f in files if not f.error], summary)
    pre = spec.preprocess
    bottom = Backbone(aset.onnx_path, device)
    per_call = max(1, IMAGES_PER_CALL // views)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, dynamic_ncols=True,
               desc=f"activations at {cut}")

    def work(item):
        h, path = item
        got = read_hashed(path)
        if got.error:
            return h, path, None, None, got.error
        if got.hash != h:
            return h, path, None, None, "changed since its pooled vector was made (embed it again)"
        try:
            pixels, params = make_views(decode_image(got.data, draft_to=draft_target(pre)), pre, views, seed, h)
        except DecodeError as exc:
            return h, path, None, None, str(exc)
        return h, path, pixels, params, None

    batch: list = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="featstore-cut") as pool:
        for h, path, pixels, params, error in in_order(pool, work, todo, 2 * per_call):
            bar.update(1)
            if error:
                summary.failed += 1
                summary.failures.append((path, error))
                continue
            batch.append((h, pixels, params))
            if len(batch) == per_call:
                _run_images(store, aset, bottom, pre, batch, summary)
                batch = []
        if batch:
            _run_images(store, aset, bottom, pre, batch, summary)
    bar.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def _run_images(store, aset, bottom, pre, batch, summary) -> None:
    pixels = np.concatenate([b[1] for b in batch])                     # (n * V, S, S, 3)
    out = bottom.run(normalise(pixels, pre)).reshape((len(batch), aset.views) + tuple(aset.shape))
    write_activations(store, aset, [b[0] for b in batch], out, params=[b[2] for b in batch])
    summary.embedded += len(batch)


def _todo(store: Store, eset: EmbeddingSet, aset: ActivationSet, keyed: list[tuple[str, str]],
          summary: CutSummary) -> list[tuple[str, str]]:
    """(hash, path or text) of the contents of `keyed` (key, path/text) that the pooled set holds and the
    activation set lacks, each content once."""
    items = store.items_by_path()
    pooled = store.embedded_hashes(eset)
    stored = stored_hashes(store, aset)
    todo: dict[str, str] = {}
    counted: set[str] = set()
    for key, value in keyed:
        item = items.get(key)
        if item is None or item.status != "ok" or item.hash not in pooled or item.hash in counted:
            continue
        counted.add(item.hash)
        if item.hash in stored:
            summary.already += 1
        else:
            todo[item.hash] = value
    return list(todo.items())


def embed_cut_texts(store: Store, records: list, spec: ModelSpec, eset: EmbeddingSet, cut: str,
                    device: str = "auto", batch_size: int = 64, progress: bool = True, log=print) -> CutSummary:
    """Text: one view; the bottom graph's hidden states of each text's real tokens."""
    from tqdm import tqdm

    from featstore.models.tokenize import TextTokenizer

    t_start = time.perf_counter()
    aset = activation_set(store, spec, eset, cut, 1, 0, log)
    summary = CutSummary(cut, 1, aset.act_id, aset.shape, bytes_per_item=aset.item_bytes, unit="text")
    todo = _todo(store, eset, aset, [(r.key, r.text) for r in records if r.text is not None and not r.error],
                 summary)
    tokenizer = TextTokenizer(spec)
    bottom = Backbone(aset.onnx_path, device)
    texts = [t for _, t in todo]
    order = np.argsort(-tokenizer.lengths(texts), kind="stable") if texts else []
    bar = tqdm(total=len(todo), unit="text", disable=not progress or not todo, dynamic_ncols=True,
               desc=f"activations at {cut}")
    dim = aset.shape[1]
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        enc = tokenizer.encode([texts[i] for i in idx])
        width = enc.feeds["input_ids"].shape[1]
        out = bottom.run_feeds(enc.feeds).reshape(len(idx), 1, width, dim)
        write_activations(store, aset, [todo[i][0] for i in idx], out, tokens=[int(n) for n in enc.lengths])
        summary.embedded += len(idx)
        bar.update(len(idx))
    bar.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def check_options(spec: ModelSpec, cut: str | None, views: int, engine: str = "local") -> None:
    """--cut / --views refused before any work: an unknown cut (the valid ones listed), views out of range, views
    for text, the Ray engine."""
    from featstore.errors import FeatstoreError
    from featstore.models.cuts import check_cut

    if cut is None:
        if views != 1:
            raise FeatstoreError("--views stores augmented views of the activations at a cut: give --cut too "
                                 "(e.g. --cut last-block --views 4)")
        return
    check_cut(spec, cut)
    if not 1 <= views <= MAX_VIEWS:
        raise FeatstoreError(f"--views {views}: give 1 to {MAX_VIEWS} views per image")
    if spec.modality == "text" and views > 1:
        raise FeatstoreError(f"--views {views}: texts have one view (augmented views are for images)")
    if engine != "local":
        raise FeatstoreError("--cut runs on the local engine (leave out --engine ray)")
