"""Embedding sets: the key that says which vectors may be compared, and the backbone that makes them.

A set is keyed by a hash of everything that determines its values: the ONNX graph bytes, the preprocessing spec,
the precision, the provider class (cpu/cuda) and featstore's feature-format version. Changing any of them starts a
new set; vectors of different sets are never mixed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from featstore.embed.decode import read_pixels
from featstore.embed.run import Backbone
from featstore.errors import FeatstoreError
from featstore.hashing import file_sha256
from featstore.models.catalog import ModelSpec, Preprocess, catalogue_spec
from featstore.models.export import ensure_exported
from featstore.models.graph_input import pixel_input_graph
from featstore.models.precision import CALIBRATION_IMAGES, check as check_precision, fp16_graph, int8_graph
from featstore.models.preprocess import normalise
from featstore.models.session import expected_device, provider_class
from featstore.store.schema import FEATURE_FORMAT, EmbeddingSet


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
    check_precision(precision, expected_device(device))
    if precision == "int8":
        reuse = [s.onnx_path for s in store.sets() if s.model == spec.name and s.precision == "int8"]
        onnx_path = int8_graph(spec, onnx_path, store.root, lambda: calibration_batch(spec, calibration_paths or []),
                               reuse, log=log)
    elif precision == "fp16":
        onnx_path = fp16_graph(onnx_path, log=log)
    backbone = session_for(onnx_path, device, spec.preprocess if spec.modality == "image" else None)
    return backbone, set_for(spec, onnx_path, backbone.device, precision)


def session_for(onnx_path: Path, device: str = "auto", pre: Preprocess | None = None,
                pixels_in_graph: bool | None = None, **options) -> Backbone:
    """The session an image backbone runs in: on CUDA (or when `pixels_in_graph` asks) over the graph with its
    normalisation fused into a uint8 input (models.graph_input), made before the session opens, so the host sends
    uint8 and does no float pass; else over `onnx_path` itself, normalising on the host. `pre` None: text."""
    fuse = expected_device(device) == "cuda" if pixels_in_graph is None else pixels_in_graph
    if pre is not None and fuse:
        try:
            return Backbone(pixel_input_graph(Path(onnx_path), pre), device=device, pixels_for=pre, **options)
        except OSError:                 # the home is not writable: normalise on the host, as on the CPU
            pass
    return Backbone(onnx_path, device=device, **options)


def calibration_batch(spec: ModelSpec, paths: list[str]) -> tuple[np.ndarray, list[str]]:
    """A seeded sample of the user's images, preprocessed exactly as for embedding: (tensor, their hashes)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(paths))
    pixels, hashes = [], []
    for i in order:
        prep = read_pixels(paths[i], spec.preprocess)
        if prep.pixels is not None and prep.hash not in hashes:
            pixels.append(prep.pixels)
            hashes.append(prep.hash)
        if len(pixels) == CALIBRATION_IMAGES:
            break
    if len(pixels) < 8:
        raise FeatstoreError(f"int8 calibration needs at least 8 readable images in the source, found {len(pixels)}")
    return normalise(np.stack(pixels), spec.preprocess), sorted(hashes)


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
    pre = Preprocess.from_dict(s.preprocess)
    return session_for(path, device, pre), pre


def partner_spec(s: EmbeddingSet) -> ModelSpec | None:
    """The other tower of the dual encoder that embedded set `s` (CLIP's text tower for its image set, and back),
    or None when the set's model has none."""
    from featstore.models.catalog import partner

    spec = catalogue_spec(s.model)
    return partner(spec) if spec is not None else None


def partner_backbone(s: EmbeddingSet, device: str = "cpu", log=print):
    """A session of the other tower of set `s`'s dual encoder, with its input transform (TextTokenizer or
    Preprocess): its vectors share the set's space (cross-modal search, zero-shot heads)."""
    spec, other = catalogue_spec(s.model), partner_spec(s)
    if other is None:
        raise FeatstoreError(f"model {s.model} embeds {s.modality} only: ranking a {_other(s.modality)} query "
                             "against it needs a dual encoder (e.g. a CLIP model imported with `featstore models "
                             f"add`) or a {_other(s.modality)} embedding set")
    if s.precision == "fp32" and file_sha256(ensure_exported(spec, log=log)) != s.onnx_sha256:
        raise FeatstoreError(f"set {s.set_id} was embedded by another version of {s.model} than the one imported "
                             "now; re-embed it so its vectors share a space with the other tower")
    path = ensure_exported(other, log=log)
    if other.modality == "text":
        from featstore.models.tokenize import TextTokenizer

        return Backbone(path, device=device), TextTokenizer(other)
    return session_for(path, device, other.preprocess), other.preprocess


def _other(modality: str) -> str:
    return "text" if modality == "image" else "image"


def _tokenizer_for_set(s: EmbeddingSet):
    from featstore.models.tokenize import TextTokenizer

    spec = catalogue_spec(s.model)
    if spec is None or spec.input_key() != s.preprocess:
        raise FeatstoreError(f"the tokenizer that embedded set {s.set_id} (model {s.model}) is not the installed "
                             "one; re-embed with the current model")
    return TextTokenizer(spec)
