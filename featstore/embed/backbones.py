"""Embedding sets: the key that says which vectors may be compared, and the backbone that makes them.

A set is keyed by a hash of everything that determines its values: the ONNX graph bytes, the preprocessing spec,
the precision, the provider class (cpu/cuda) and featstore's feature-format version. Changing any of them starts a
new set; vectors of different sets are never mixed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from featstore.embed.run import Backbone, provider_class
from featstore.models.catalog import ModelSpec, Preprocess, catalogue_spec
from featstore.errors import FeatstoreError
from featstore.models.export import ensure_exported
from featstore.hashing import file_sha256
from featstore.models.precision import check as check_precision
from featstore.models.precision import fp16_graph, int8_graph
from featstore.store.db import FEATURE_FORMAT, EmbeddingSet


def set_for(spec: ModelSpec, onnx_path: Path, device_used: str, precision: str = "fp32") -> EmbeddingSet:
    """The embedding set that vectors from this backbone, preprocessing, precision and device belong to."""
    sha = file_sha256(onnx_path)
    pre = spec.input_key()
    provider = provider_class(device_used)
    key = json.dumps({"onnx_sha256": sha, "preprocess": pre, "precision": precision, "provider": provider,
                      "feature_format": FEATURE_FORMAT}, sort_keys=True)
    set_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    return EmbeddingSet(set_id=set_id, model=spec.name, dim=spec.dim, table=f"emb_{set_id}",
                        onnx_path=str(onnx_path), onnx_sha256=sha, preprocess=pre, precision=precision,
                        provider=provider)


def open_backbone(spec: ModelSpec, device: str = "auto", log=print, precision: str = "fp32",
                  store=None, calibration_paths: list[str] | None = None) -> tuple[Backbone, EmbeddingSet]:
    """Export if needed, derive the int8/fp16 graph if asked, and name the set its vectors belong to (the ONNX
    Runtime session itself starts on first use). int8 needs the store (its calibrated graph lives there, shared
    by later int8 runs) and the paths to calibrate on."""
    onnx_path = ensure_exported(spec, log=log)
    backbone = Backbone(onnx_path, device=device)
    check_precision(precision, backbone.device)
    if precision == "int8":
        reuse = [s.onnx_path for s in store.sets() if s.model == spec.name and s.precision == "int8"]
        onnx_path = int8_graph(spec, onnx_path, store.root, calibration_paths or [], reuse, log=log)
    elif precision == "fp16":
        onnx_path = fp16_graph(onnx_path, log=log)
    if precision != "fp32":
        backbone = Backbone(onnx_path, device=device)
    return backbone, set_for(spec, onnx_path, backbone.device, precision)


def backbone_for_set(s: EmbeddingSet, device: str = "cpu", log=print):
    """A session that reproduces a stored set's vectors (for queries and predictions on new inputs), with what
    turns an input into its tensors: a Preprocess for images, a TextTokenizer for text."""
    path = Path(s.onnx_path)
    spec = catalogue_spec(s.model)
    if not path.is_file() and spec is not None and s.precision in ("fp32", "fp16"):
        path = ensure_exported(spec, log=log)
        path = fp16_graph(path, log=log) if s.precision == "fp16" else path
    if not path.is_file():
        raise FeatstoreError(f"the ONNX file of model {s.model} ({s.onnx_path}) is gone; cannot embed new files")
    if file_sha256(path) != s.onnx_sha256:
        raise FeatstoreError(f"{path} no longer matches the ONNX graph that embedded set {s.set_id} "
                             f"(model {s.model}); re-embed with the current model")
    if s.modality == "text":
        return Backbone(path, device=device), _tokenizer_for_set(s)
    return Backbone(path, device=device), Preprocess.from_dict(s.preprocess)


def _tokenizer_for_set(s: EmbeddingSet):
    from featstore.models.tokenize import TextTokenizer

    spec = catalogue_spec(s.model)
    if spec is None or spec.input_key() != s.preprocess:
        raise FeatstoreError(f"the tokenizer that embedded set {s.set_id} (model {s.model}) is not the installed "
                             "one; re-embed with the current model")
    return TextTokenizer(spec)
