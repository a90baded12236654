"""Views of an image for cached activations: view 0 is the plain preprocessing (the pixels the pooled vector is
computed from); views 1.. are a seeded random resized crop (Inception-style, as torchvision's RandomResizedCrop)
and horizontal flip of the decoded image, resized to the model's input with its interpolation.

Each view's randomness comes from (seed, content hash, view number) alone, so a view is the same whatever the
order or batch it is made in, and the parameters drawn are returned to be recorded beside the activation.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from featstore.models.catalog import Preprocess
from featstore.models.preprocess import _FILTERS, crop_resize

SCALE = (0.25, 1.0)            # the crop's share of the image area
RATIO = (3 / 4, 4 / 3)         # the crop's aspect ratio (width / height), drawn log-uniformly
FLIP = 0.5                     # probability of a horizontal flip


def augment_record(seed: int) -> dict:
    """What the views are: recorded in the activation set's key."""
    return {"modality": "image", "seed": int(seed), "view0": "plain preprocessing",
            "views": "random resized crop + horizontal flip", "scale": list(SCALE),
            "ratio": [round(r, 6) for r in RATIO],
            "flip": FLIP, "rng": "numpy PCG64 seeded by (seed, hash[:16] as int, view)"}


def view_rng(seed: int, content_hash: str, view: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(content_hash[:16], 16), int(view)])


def crop_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, width, height): torchvision's RandomResizedCrop.get_params with SCALE and RATIO."""
    area = w * h
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    in_ratio = w / h                                        # fallback: the centre crop
    if in_ratio < RATIO[0]:
        cw, ch = w, int(round(w / RATIO[0]))
    elif in_ratio > RATIO[1]:
        cw, ch = int(round(h * RATIO[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def make_views(img: Image.Image, pre: Preprocess, n: int, seed: int, content_hash: str) -> tuple[np.ndarray, list]:
    """(n views HWC uint8 (n, S, S, 3), their parameters [None, {...}, ...])."""
    out = np.empty((n, pre.size, pre.size, 3), np.uint8)
    out[0] = crop_resize(img, pre)
    params: list = [None]
    w, h = img.size
    for v in range(1, n):
        rng = view_rng(seed, content_hash, v)
        left, top, cw, ch = crop_box(w, h, rng)
        flip = bool(rng.uniform() < FLIP)
        view = img.resize((pre.size, pre.size), _FILTERS[pre.interpolation], box=(left, top, left + cw, top + ch))
        if flip:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[v] = np.asarray(view, dtype=np.uint8)
        params.append({"box": [left, top, cw, ch], "image": [w, h], "flip": flip})
    return out, params
