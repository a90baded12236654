"""A Hugging Face image processor -> featstore's preprocessing spec ([input] of a catalogue file), exactly or not
at all.

The processor is loaded with its PIL backend (the one that resizes with Pillow, as featstore does) and its resolved
settings are read: resize rule, crop, resample, rescale factor, mean and std. Supported: the generic resize ->
centre crop -> rescale -> normalise pipeline (ViT, BiT/DINOv2, CLIP, SigLIP, Swin, ...) and ConvNeXt's crop_pct
rule (also used by ResNet). Anything else is refused with one line, never approximated.
"""
from __future__ import annotations

import json
from pathlib import Path

from featstore.errors import FeatstoreError

RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def image_processor_file(folder: Path) -> Path | None:
    """The file holding the folder's image processor settings, wherever transformers saved it: its own
    preprocessor_config.json (an image processor's save_pretrained; any processor's before transformers 5), or
    inside processor_config.json (a processor's save_pretrained since transformers 5); None when neither."""
    own = folder / "preprocessor_config.json"
    if own.is_file():
        return own
    joint = folder / "processor_config.json"
    if not joint.is_file():
        return None
    try:
        settings = json.loads(joint.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeatstoreError(f"{joint}: not valid JSON ({exc})") from None
    return joint if isinstance(settings, dict) and isinstance(settings.get("image_processor"), dict) else None


def require_image_processor(folder: Path) -> Path:
    """image_processor_file, or one line saying it is missing (checked before transformers is imported)."""
    found = image_processor_file(folder)
    if found is None:
        raise FeatstoreError(f"{folder}: no image processor settings (neither preprocessor_config.json nor an "
                             "image_processor in processor_config.json), so the model's preprocessing is unknown; "
                             "save its processor into the folder too: processor.save_pretrained(folder)")
    return found


def load_processor(folder: Path):
    """The folder's image processor, PIL backend (export time only: imports transformers)."""
    require_image_processor(folder)
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    except (OSError, ValueError, KeyError) as exc:
        raise FeatstoreError(f"{folder}: cannot read its image processor ({str(exc).splitlines()[0]})") from None


def input_spec(proc, what: str) -> dict:
    """The [input] table reproducing `proc` pixel for pixel, or a FeatstoreError saying what cannot be."""
    from transformers.image_processing_backends import PilBackend
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    name = type(proc).__name__
    cls = type(proc)
    convnext = isinstance(proc, ConvNextImageProcessorPil)
    if not convnext and (cls._preprocess is not PilBackend._preprocess or cls.resize is not PilBackend.resize
                         or cls.center_crop is not PilBackend.center_crop):
        raise FeatstoreError(f"{what}: image processor {name} has its own preprocessing steps; featstore cannot "
                             "reproduce them exactly (supported: ViT, BiT/DINOv2, CLIP, SigLIP, ConvNeXt/ResNet "
                             "style resize + centre crop + rescale + normalise)")
    if getattr(proc, "do_pad", False):
        raise FeatstoreError(f"{what}: image processor {name} pads images; featstore cannot reproduce that")
    if not proc.do_resize:
        raise FeatstoreError(f"{what}: image processor {name} does not resize, so its input size varies per image")
    resample = int(proc.resample if proc.resample is not None else 2)
    if resample not in RESAMPLE:
        raise FeatstoreError(f"{what}: resample mode {proc.resample!r} is not one Pillow resizes with")
    size, crop = dict(proc.size or {}), dict(proc.crop_size or {}) if proc.do_center_crop else {}
    if convnext:
        edge = int(size["shortest_edge"])
        pct = float(proc.crop_pct if proc.crop_pct is not None else 224 / 256)
        geometry = ({"size": edge, "resize": "shorter-side-then-crop", "resize_to": int(edge / pct)} if edge < 384
                    else {"size": edge, "resize": "exact"})
        if crop:
            geometry = _then_crop(geometry, crop, name, what)
    elif size.get("shortest_edge") and not size.get("longest_edge"):
        if not crop:
            raise FeatstoreError(f"{what}: image processor {name} resizes the shorter side without cropping, so its "
                                 "input size varies per image; featstore needs a square input")
        side = _square(crop, name, what, "crop_size")
        geometry = {"size": side, "resize": "shorter-side-then-crop", "resize_to": int(size["shortest_edge"])}
    elif size.get("height") and size.get("width"):
        geometry = {"size": _square(size, name, what, "size"), "resize": "exact"}
        if crop:
            geometry = _then_crop(geometry, crop, name, what)
    else:
        raise FeatstoreError(f"{what}: image processor {name} resizes by {size}; featstore reproduces a shorter-side "
                             "or an exact square resize only")
    rescale = float(proc.rescale_factor) if proc.do_rescale else 1.0
    mean = [float(m) for m in _three(proc.image_mean)] if proc.do_normalize else [0.0] * 3
    std = [float(s) for s in _three(proc.image_std)] if proc.do_normalize else [1.0] * 3
    return {**geometry, "crop": "center", "crop_fraction": 1.0, "interpolation": RESAMPLE[resample],
            "mean": [m / rescale for m in mean], "std": [s / rescale for s in std], "processor": name}


def _then_crop(geometry: dict, crop: dict, name: str, what: str) -> dict:
    side = _square(crop, name, what, "crop_size")
    if side != geometry["size"]:
        raise FeatstoreError(f"{what}: image processor {name} resizes to a square and then crops {side} pixels "
                             "from it; featstore does not reproduce that crop")
    return geometry


def _square(d: dict, name: str, what: str, key: str) -> int:
    h, w = int(d["height"]), int(d["width"])
    if h != w:
        raise FeatstoreError(f"{what}: image processor {name} has a {h} x {w} {key}; featstore runs square inputs")
    return h


def _three(v) -> list:
    vals = [v] if isinstance(v, (int, float)) else list(v)
    return vals * 3 if len(vals) == 1 else vals
