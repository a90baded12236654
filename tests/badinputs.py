"""More awkward inputs (beside badfiles.py): special files, formats Pillow may not read, extreme shapes, text."""
import io
import os
from pathlib import Path

from PIL import Image

import badfiles
from conftest import sample_images


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def two_frames(fmt: str, **kw) -> bytes:
    """A green first frame/page, a red second one."""
    frames = [Image.new("RGB", (40, 30), (0, 200, 0)), Image.new("RGB", (40, 30), (200, 0, 0))]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


def striped(w: int, h: int) -> bytes:
    """A w x h PNG, blue in the middle tenth along its long side, red elsewhere."""
    img = Image.new("RGB", (w, h), (200, 0, 0))
    long = max(w, h)
    mid = Image.new("RGB", (long // 10, 1) if w > h else (1, long // 10), (0, 0, 200))
    img.paste(mid, ((w - mid.width) // 2, (h - mid.height) // 2))
    return save(img, "PNG")


def heic_header() -> bytes:
    """The start of a HEIC file (ISO base media 'ftyp' box, brand heic): what an iPhone photo begins with."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x08meta" + bytes(200)


def svg() -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" '
            b'height="64"><rect width="64" height="64" fill="green"/></svg>\n')


def jpeg_with_big_icc() -> bytes:
    """A real photo carrying a 10 MB ICC profile blob (split over many APP2 segments)."""
    return badfiles.jpeg(Image.open(sample_images(1)[0]), icc_profile=os.urandom(10 << 20))


IMAGES = {  # name -> (bytes, expected status, a word the reason must hold)
    "heic.jpg": (heic_header, "failed", "not a supported image format (HEIC)"),
    "drawing.jpg": (svg, "failed", "not a supported image format (SVG)"),
    "avif.jpg": (lambda: save(Image.new("RGB", (40, 30), (0, 200, 0)), "AVIF"), "ok", None),
    "wide.png": (lambda: striped(100000, 1), "ok", None),
    "tall.png": (lambda: striped(1, 100000), "ok", None),
    "pages.tif": (lambda: two_frames("TIFF"), "ok", None),
    "anim.webp": (lambda: two_frames("WEBP", duration=100, loop=0, lossless=True), "ok", None),
    "icc.jpg": (jpeg_with_big_icc, "ok", None),
    "new\nline.jpg": (badfiles.real_jpeg, "ok", None),
    "bad\nname.jpg": (lambda: b"my notes, not a picture\n" * 20, "failed", "not an image"),
}
SPECIAL = {  # name -> reason (never opened)
    "fifo.jpg": "not a regular file (FIFO)",
    "zero.jpg": "not a regular file (character device)",
    "urandom.jpg": "not a regular file (character device)",
}


def write_zoo(root: Path) -> Path:
    """IMAGES and SPECIAL in root/odd, plus a folder named x.jpg holding one real photo (walked as a folder)."""
    odd = root / "odd"
    odd.mkdir(parents=True, exist_ok=True)
    for name, (make, _, _) in IMAGES.items():
        (odd / name).write_bytes(make())
    os.mkfifo(odd / "fifo.jpg")
    (odd / "zero.jpg").symlink_to("/dev/zero")
    (odd / "urandom.jpg").symlink_to("/dev/urandom")
    (odd / "x.jpg").mkdir()
    (odd / "x.jpg" / "inside.jpg").write_bytes(badfiles.jpeg(Image.open(sample_images(2)[1])))
    return root
