"""Image bytes -> an upright 8-bit RGB PIL image, or a DecodeError saying why not: the one decoder that embedding,
queries and export parity checks share (the embed pipeline's decode stage, featstore.embed.decode, calls it)."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from featstore.errors import DecodeError

MAX_PIXELS = 64_000_000          # refuse larger images before decoding them (decompression-bomb guard)
Image.MAX_IMAGE_PIXELS = None    # featstore enforces MAX_PIXELS itself, with a clear reason


def decode_image(data: bytes, draft_to: int | None = None) -> Image.Image:
    """Open image bytes, apply EXIF orientation, take the first frame, convert to 8-bit RGB.

    draft_to: the smallest shorter side the caller needs; a JPEG much larger than that is decoded
    directly at a reduced scale (DCT-domain downscaling), which is cheaper and keeps quality.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DecodeError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP "
                                  "limit (decompression-bomb guard)")
            if draft_to and img.format == "JPEG":
                scale = min(w, h) / draft_to
                if scale >= 2:
                    img.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except DecodeError:
        raise
    except Image.UnidentifiedImageError:
        kind = sniff_format(data)
        if kind:
            raise DecodeError(f"not a supported image format ({kind})") from None
        raise DecodeError("not an image file Pillow can read") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        reason = str(exc) or type(exc).__name__
        raise DecodeError(f"cannot decode image: {reason}") from None


_ISOBMFF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                   b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def sniff_format(data: bytes) -> str | None:
    """The name of a known image format Pillow did not open (so the reason can say what the file is)."""
    if data[4:8] == b"ftyp":                              # ISO base media file: HEIC / HEIF / AVIF
        return _ISOBMFF_BRANDS.get(data[8:12], "ISO media (ftyp " + data[8:12].decode("latin-1") + ")")
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or head.startswith(b"<?xml") and b"<svg" in head:
        return "SVG"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit greyscale is scaled, transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
