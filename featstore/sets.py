"""Embedding sets: the key that says which vectors may be compared, and the backbone that makes them.

A set is keyed by a hash of everything that determines its values: the ONNX graph bytes, the preprocessing spec,
the precision, the provider class (cpu/cuda) and featstore's feature-format version. Changing any of them starts a
new set; vectors of different sets are never mixed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .backbone import Backbone, provider_class
from .catalog import ModelSpec, Preprocess, builtin_models
from .errors import FeatstoreError
from .export import ensure_exported
from .hashing import file_sha256
from .store import FEATURE_FORMAT, EmbeddingSet

PRECISION = "fp32"


def set_for(spec: ModelSpec, onnx_path: Path, device_used: str) -> EmbeddingSet:
    """The embedding set that vectors from this backbone, preprocessing and device belong to."""
    sha = file_sha256(onnx_path)
    pre = spec.input_key()
    provider = provider_class(device_used)
    key = json.dumps({"onnx_sha256": sha, "preprocess": pre, "precision": PRECISION, "provider": provider,
                      "feature_format": FEATURE_FORMAT}, sort_keys=True)
    set_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    return EmbeddingSet(set_id=set_id, model=spec.name, dim=spec.dim, table=f"emb_{set_id}",
                        onnx_path=str(onnx_path), onnx_sha256=sha, preprocess=pre, precision=PRECISION,
                        provider=provider)


def open_backbone(spec: ModelSpec, device: str = "auto", log=print) -> tuple[Backbone, EmbeddingSet]:
    """Export if needed, start an ONNX Runtime session, and name the set its vectors belong to."""
    onnx_path = ensure_exported(spec, log=log)
    backbone = Backbone(onnx_path, device=device)
    return backbone, set_for(spec, onnx_path, backbone.device)


def backbone_for_set(s: EmbeddingSet, device: str = "cpu", log=print):
    """A session that reproduces a stored set's vectors (for queries and predictions on new inputs), with what
    turns an input into its tensors: a Preprocess for images, a TextTokenizer for text."""
    path = Path(s.onnx_path)
    if not path.is_file() and s.model in builtin_models():
        path = ensure_exported(builtin_models()[s.model], log=log)
    if not path.is_file():
        raise FeatstoreError(f"the ONNX file of model {s.model} ({s.onnx_path}) is gone; cannot embed new files")
    if file_sha256(path) != s.onnx_sha256:
        raise FeatstoreError(f"{path} no longer matches the ONNX graph that embedded set {s.set_id} "
                             f"(model {s.model}); re-embed with the current model")
    if s.modality == "text":
        return Backbone(path, device=device), _tokenizer_for_set(s)
    return Backbone(path, device=device), Preprocess.from_dict(s.preprocess)


def _tokenizer_for_set(s: EmbeddingSet):
    from .tokenize import TextTokenizer

    spec = builtin_models().get(s.model)
    if spec is None or spec.input_key() != s.preprocess:
        raise FeatstoreError(f"the tokenizer that embedded set {s.set_id} (model {s.model}) is not the installed "
                             "one; re-embed with the current model")
    return TextTokenizer(spec)
