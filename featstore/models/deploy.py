"""The inputs of a fused export (`featstore export`) made from its metadata alone, exactly as `predict` makes them:
images with numpy and Pillow (featstore's own decode, crop and resize), texts with the `tokenizers` library and the
tokenizer.json the file carries. No torch, no store."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageOps

from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess
from featstore.models.images import decode_image, to_rgb
from featstore.models.preprocess import crop_resize, draft_target, normalise
from featstore.models.tokenize import TEXT_INPUTS


def preprocess(meta, inputs) -> dict[str, np.ndarray]:
    """The feeds of a fused model (`session.run(None, feeds)`) for one input or a list: images as a path, bytes or
    a PIL image (pass the path or bytes to get predict's pixels exactly: large JPEGs are decoded at a reduced
    scale), or texts. `meta`: the model's metadata (`session.get_modelmeta().custom_metadata_map`) or the
    onnxruntime session itself."""
    meta = meta.get_modelmeta().custom_metadata_map if hasattr(meta, "get_modelmeta") else meta
    if "featstore.preprocess" not in meta:
        raise FeatstoreError("not a featstore export: its metadata has no featstore.preprocess")
    p = json.loads(meta["featstore.preprocess"])
    batch = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    text = meta.get("featstore.modality", "text" if "max_tokens" in p else "image") == "text"
    names = json.loads(meta.get("featstore.inputs") or "null") or (list(TEXT_INPUTS) if text else ["image"])
    if text:
        feeds = tokens(_tokenizer_json(meta), int(p["max_tokens"]), [str(t) for t in batch])
        return {k: feeds[k] for k in names}
    pre = Preprocess.from_dict(p)
    return {names[0]: normalise(np.stack([crop_resize(_image(x, pre), pre) for x in batch]), pre)}


def _image(x, pre: Preprocess) -> Image.Image:
    """An upright 8-bit RGB image from a path, bytes or a PIL image, decoded as the embed pipeline decodes."""
    if isinstance(x, Image.Image):
        return to_rgb(ImageOps.exif_transpose(x))
    if isinstance(x, (str, os.PathLike)):
        with open(x, "rb") as f:
            x = f.read()
    return decode_image(bytes(x), draft_to=draft_target(pre))


def _tokenizer_json(meta) -> str:
    if "featstore.tokenizer" not in meta:
        raise FeatstoreError("this export carries no tokenizer (exported by an older featstore): export it again")
    return meta["featstore.tokenizer"]


def tokens(tokenizer_json: str, max_tokens: int, texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids, attention mask and token type ids (int64, texts x longest) as featstore's TextTokenizer makes
    them: truncated at max_tokens, zero-padded to the longest text."""
    from featstore.models.tokenize import TextTokenizer          # tokenizers: imported for texts only

    return TextTokenizer.from_json(tokenizer_json, max_tokens).encode(texts).feeds
