"""Preprocess: RGB image -> the backbone's input, exactly as the catalogue says (one implementation for all)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess

_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
            "nearest": Image.NEAREST, "box": Image.BOX, "hamming": Image.HAMMING}
RESIZE_MODES = ("shorter-side", "shorter-side-then-crop", "exact")


def crop_resize(img: Image.Image, p: Preprocess) -> np.ndarray:
    """The image at the model's input size, HWC uint8, by the spec's resize mode:

    shorter-side            centre square of side crop_fraction * shorter side, resized to size x size in one
                            resampling step from the source pixels (the catalogue backbones);
    shorter-side-then-crop  shorter side resized to resize_to (the longer side int(resize_to * long / short)),
                            then the centre size x size crop at integer offsets ((w - size) // 2): the Hugging Face
                            image processors' resize + center_crop, same PIL call;
    exact                   the whole image resized to size x size (aspect not kept): their resize to
                            {height, width}.
    """
    if p.resize == "exact":
        return np.asarray(img.resize((p.size, p.size), _FILTERS[p.interpolation]), dtype=np.uint8)
    w, h = img.size
    if p.resize == "shorter-side-then-crop":
        nw, nh, top, left = resize_then_crop(w, h, p)
        out = np.asarray(img.resize((nw, nh), _FILTERS[p.interpolation]), dtype=np.uint8)
        return out[top:top + p.size, left:left + p.size]
    left, top, side = centre_box(w, h, p)
    out = img.resize((p.size, p.size), _FILTERS[p.interpolation], box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def resize_then_crop(w: int, h: int, p: Preprocess) -> tuple[int, int, int, int]:
    """"shorter-side-then-crop" on a w x h image: the size the whole image is resized to and the crop's offsets
    in it, (resized width, resized height, top, left)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(p.resize_to * long / short)
    nw, nh = (p.resize_to, new_long) if w <= h else (new_long, p.resize_to)
    top, left = (nh - p.size) // 2, (nw - p.size) // 2
    if top < 0 or left < 0:
        raise FeatstoreError(f"preprocessing crops {p.size} pixels from a side resized to {p.resize_to}")
    return nw, nh, top, left


def centre_box(w: int, h: int, p: Preprocess) -> tuple[float, float, float]:
    """"shorter-side" on a w x h image: the centre square resized to the model's input, (left, top, side)."""
    side = min(w, h) * p.crop_fraction
    return (w - side) / 2, (h - side) / 2, side


def normalise(batch: np.ndarray, p: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """NHWC uint8 -> NCHW float32, (x - mean) / std per channel, for the whole batch at once (into `out`, a
    preallocated NCHW float32 buffer, when given)."""
    mean = np.asarray(p.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(p.std, dtype=np.float32)).reshape(1, 3, 1, 1)
    x = out[:len(batch)] if out is not None else np.empty((len(batch), 3) + batch.shape[1:3], np.float32)
    np.subtract(batch.transpose(0, 3, 1, 2), mean, out=x)
    x *= inv_std
    return x


def draft_target(p: Preprocess) -> int | None:
    """The smallest shorter side a decoder must keep for this preprocessing (JPEG draft size); None: decode at
    full size (the two-step and exact resizes reproduce a Hugging Face processor's pixels, which start from the
    full-size decode)."""
    if p.resize != "shorter-side":
        return None
    return int(np.ceil(p.size / p.crop_fraction))
