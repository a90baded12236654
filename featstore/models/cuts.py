"""Cut points: where a backbone is split so that the activations below the cut can be cached in the store and the
layers above it trained (fine-tuning without decoding or running the whole network every epoch).

  cut_points(model)          the named cut points of a catalogue backbone or imported Hugging Face model
  top_module(model, cut)     torch: the pretrained layers above the cut, activation (+ mask) -> pooled features
  bottom_graph(model, cut)   ONNX: the backbone's inputs -> the activation at the cut (exported once, checked
                             against torch on the parity photos / sentences, cached beside the backbone's export)
  cut_shape(model, cut)      the activation's shape per item (text: (max_tokens, D), padded)

EfficientNet-Lite: `conv-head` and `last-block` (cut_lite.py); transformers (MiniLM, imported ViT / DeiT / DINOv2,
CLIP / SigLIP vision towers, BERT-like text encoders): `last-block` and `last-2-blocks` (cut_transformers.py).
torch is imported only by top_module and by the first bottom_graph of a backbone.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.models.catalog import ModelSpec, resolve

CUT_FORMAT = 1          # bump when the bottom graphs change what they output


@dataclass(frozen=True)
class CutPoint:
    name: str
    description: str


def _spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else resolve(model)


def _family(spec: ModelSpec) -> str:
    """'lite' or 'transformer', or one line saying the model has no cut points."""
    from featstore.models.cut_transformers import TEXT_TYPES, VISION_TYPES

    builder = spec.source.get("builder")
    if builder == "efficientnet_lite":
        return "lite"
    if builder == "sentence_transformer":
        return "transformer"
    model_type = spec.source.get("model_type", "")
    if builder == "transformers" and model_type in (VISION_TYPES if spec.modality == "image" else TEXT_TYPES):
        return "transformer"
    what = f"model type {model_type!r}" if builder == "transformers" else f"builder {builder!r}"
    raise FeatstoreError(f"model {spec.name!r} ({what}) has no cut points: activations are cached for "
                         "EfficientNet-Lite, MiniLM, and imported ViT/DeiT/DINOv2, CLIP/SigLIP image towers and "
                         "BERT-like text encoders")


def cut_points(model: str | ModelSpec) -> list[CutPoint]:
    """The named cut points of a backbone (FeatstoreError when it has none)."""
    from featstore.models.cut_lite import LITE_CUTS
    from featstore.models.cut_transformers import TRANSFORMER_CUTS

    cuts = LITE_CUTS if _family(_spec(model)) == "lite" else TRANSFORMER_CUTS
    return [CutPoint(n, d) for n, d in cuts.items()]


def check_cut(model: str | ModelSpec, cut: str) -> CutPoint:
    """The cut point named `cut`, or one line listing the valid ones."""
    points = cut_points(model)
    for p in points:
        if p.name == cut:
            return p
    name = _spec(model).name
    raise FeatstoreError(f"unknown cut {cut!r} for {name}; its cut points: {', '.join(p.name for p in points)}")


def _split(spec: ModelSpec, cut: str):
    """(bottom, top) torch modules of a backbone at a cut."""
    check_cut(spec, cut)
    if _family(spec) == "lite":
        from featstore.models.cut_lite import split
        from featstore.models.torch_backbones import load_classifier

        return split(load_classifier(spec), cut)
    from featstore.models.cut_transformers import split
    from featstore.models.torch_backbones import load_features, load_text_features

    tower = load_features(spec) if spec.modality == "image" else load_text_features(spec)
    return split(tower, spec.modality, 1 if cut == "last-block" else 2)


def top_module(model: str | ModelSpec, cut: str):
    """The pretrained layers above the cut, in eval mode: forward(x, mask=None), x float32 (N, *cut_shape) (and
    for text the attention mask (N, T) of 0/1) -> the backbone's pooled features (N, dim)."""
    return _split(_spec(model), cut)[1]


def bottom_path(spec: ModelSpec, cut: str) -> Path:
    from featstore.models.export import cached_path

    base = cached_path(spec)
    return base.with_name(f"{base.stem}-cut{CUT_FORMAT}-{cut}.onnx")


def bottom_graph(model: str | ModelSpec, cut: str, log=print) -> Path:
    """The ONNX file mapping the backbone's inputs to the activation at the cut (text: outputs activation and
    mask), exported and parity-checked on first use, cached in the featstore home."""
    spec = _spec(model)
    check_cut(spec, cut)
    target = bottom_path(spec, cut)
    if target.is_file() and target.with_suffix(".json").is_file():
        return target
    log(f"exporting {spec.name} below cut {cut!r} to ONNX (once; cached in {target.parent}) ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    try:
        info = _export_bottom(spec, cut, Path(tmp))
        os.replace(tmp, target)
        target.with_suffix(".json").write_text(json.dumps(info), encoding="utf-8")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log(f"exported {spec.name} below {cut}: activation {tuple(info['shape'])}, max |onnx - torch| = "
        f"{info['parity']:.2e}")
    return target


def cut_shape(model: str | ModelSpec, cut: str) -> tuple:
    """The activation's shape per item: (C, H, W), or (T, D) with T the model's token limit (padded)."""
    spec = _spec(model)
    info = json.loads(bottom_graph(spec, cut).with_suffix(".json").read_text(encoding="utf-8"))
    return tuple(info["shape"])


def _export_bottom(spec: ModelSpec, cut: str, out: Path) -> dict:
    import numpy as np
    import torch

    from featstore.models.export import OPSET, PARITY_COSINE, PARITY_TOLERANCE, parity, parity_sentences, photo_batch
    from featstore.models.session import open_session

    bottom, _ = _split(spec, cut)
    if spec.modality == "image":
        feeds = {"image": photo_batch(spec.preprocess)}
        axes = {"image": {0: "batch"}, "activation": {0: "batch"}}
        outputs = ["activation"]
    else:
        from featstore.models.tokenize import TEXT_INPUTS, TextTokenizer

        feeds = TextTokenizer(spec).encode(parity_sentences()).feeds
        axes = {k: {0: "batch", 1: "tokens"} for k in TEXT_INPUTS}
        axes |= {"activation": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}}
        outputs = ["activation", "mask"]
    names = [k for k in axes if k not in outputs]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(bottom, tuple(torch.from_numpy(feeds[k][:2]) for k in names), str(out),
                          input_names=names, output_names=outputs, dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)
        expected = bottom(*[torch.from_numpy(feeds[k]) for k in names])
        expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    session = open_session(out, "cpu", threads=os.cpu_count() or 1)
    got = session.run(["activation"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    if spec.modality == "text":             # padded positions are not compared (masked out above the cut)
        keep = feeds["attention_mask"].astype(bool)
        got, expected = got[keep], expected[keep]
    diff, cosine = parity(np.asarray(got, np.float32).reshape(len(got), -1), expected.reshape(len(expected), -1))
    if not (diff <= PARITY_TOLERANCE or cosine >= PARITY_COSINE):
        raise FeatstoreError(f"export of {spec.name} below {cut} refused: ONNX Runtime differs from torch by "
                             f"{diff:.2e} with least cosine {cosine:.7f}")
    shape = list(expected.shape[1:]) if spec.modality == "image" else [int(spec.input["max_tokens"]),
                                                                       int(expected.shape[-1])]
    return {"shape": shape, "parity": diff, "cosine": cosine, "cut": cut, "model": spec.name}
