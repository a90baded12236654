"""Preprocess: RGB image -> the backbone's input, exactly as the catalogue says (one implementation for all)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from featstore.models.catalog import Preprocess

_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
            "nearest": Image.NEAREST}


def crop_resize(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Centre square of side crop_fraction * shorter side, resized to size x size: HWC uint8.

    Equivalent to 'resize the shorter side to size / crop_fraction, then centre-crop size', done in one
    resampling step from the source pixels.
    """
    w, h = img.size
    side = min(w, h) * p.crop_fraction
    left, top = (w - side) / 2, (h - side) / 2
    out = img.resize((p.size, p.size), _FILTERS[p.interpolation], box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def normalise(batch: np.ndarray, p: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """NHWC uint8 -> NCHW float32, (x - mean) / std per channel, for the whole batch at once (into `out`, a
    preallocated NCHW float32 buffer, when given)."""
    mean = np.asarray(p.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(p.std, dtype=np.float32)).reshape(1, 3, 1, 1)
    x = out[:len(batch)] if out is not None else np.empty((len(batch), 3) + batch.shape[1:3], np.float32)
    np.subtract(batch.transpose(0, 3, 1, 2), mean, out=x)
    x *= inv_std
    return x


def draft_target(p: Preprocess) -> int:
    """The smallest shorter side a decoder must keep for this preprocessing (JPEG draft size)."""
    return int(np.ceil(p.size / p.crop_fraction))
