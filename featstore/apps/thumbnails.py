"""Thumbnails of stored images: made once from the item's file with Pillow, kept as JPEG files named by content
hash under a cache folder (the store's `thumbs/` by default), so a second request reads a small file."""
from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from featstore.errors import DecodeError, FeatstoreError
from featstore.models.images import decode_image
from featstore.paths import fs_path
from featstore.uri import is_uri, read_bytes

SIZES = (128, 256, 512)
MAX_SOURCE_BYTES = 256 * 1024 * 1024
_HASH = re.compile(r"^[0-9a-f]{16,64}$")


def thumbnail(cache: Path, path: str, content: str, size: int = 256) -> Path:
    """The cached thumbnail (longer side `size`) of the stored image at `path` with content hash `content`."""
    if size not in SIZES:
        raise FeatstoreError(f"thumbnail size {size}: one of {', '.join(map(str, SIZES))}")
    if not _HASH.match(content or ""):
        raise FeatstoreError("not a stored image content")
    out = Path(cache) / content[:2] / f"{content}-{size}.jpg"
    if out.exists():
        return out
    try:
        data = read_bytes(path, MAX_SOURCE_BYTES) if is_uri(path) else Path(fs_path(path)).read_bytes()
        img = decode_image(data, draft_to=size)
    except OSError as exc:
        raise FeatstoreError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    except DecodeError as exc:
        raise FeatstoreError(f"{path}: {exc}") from None
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}-{id(img)}")
    img.save(tmp, "JPEG", quality=85)
    os.replace(tmp, out)          # readers never see half a file; two makers write the same bytes
    return out
