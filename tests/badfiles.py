"""Builders for the awkward inputs featstore must handle: each returns the bytes of one file."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import sample_images


def real_jpeg() -> bytes:
    return sample_images(1)[0].read_bytes()


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = real_jpeg()
    return data[: len(data) // 2]


def png16() -> bytes:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    return png(Image.fromarray(ramp))


def greyscale() -> bytes:
    return jpeg(Image.open(sample_images(1)[0]).convert("L"))


def cmyk_jpeg() -> bytes:
    return jpeg(Image.open(sample_images(1)[0]).convert("CMYK"))


def palette_transparent() -> bytes:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    for x in range(16):
        for y in range(32):
            img.putpixel((x, y), 1)
    return png(img, transparency=0)       # index 0 (red) is transparent: left half blue, right half transparent


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), (0, 200, 0)), Image.new("RGB", (40, 30), (200, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def exif_rotated() -> tuple[bytes, Image.Image]:
    """A landscape photo stored turned a quarter, with EXIF orientation 6 saying how to display it upright.
    Returns (file bytes, the upright image a viewer shows)."""
    upright = Image.open(sample_images(1)[0]).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)      # counter-clockwise; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(stored, exif=exif.tobytes()), upright


def one_pixel() -> bytes:
    return png(Image.new("RGB", (1, 1), (10, 120, 30)))


def decompression_bomb(side: int = 30000) -> bytes:
    """A real, valid 1-bit PNG of side x side pixels (about 100 KB compressed, 900 MP decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


BAD = {  # name -> (bytes, expected status)
    "truncated.jpg": (truncated_jpeg, "failed"),
    "empty.jpg": (lambda: b"", "failed"),
    "notes.jpg": (lambda: b"these are my notes, not a picture\n" * 20, "failed"),
    "bomb.png": (decompression_bomb, "failed"),
    "deep16.png": (png16, "ok"),
    "grey.jpg": (greyscale, "ok"),
    "cmyk.jpg": (cmyk_jpeg, "ok"),
    "palette.png": (palette_transparent, "ok"),
    "anim.gif": (animated_gif, "ok"),
    "rotated.jpg": (lambda: exif_rotated()[0], "ok"),
    "tiny.png": (one_pixel, "ok"),
    "with space é ü.jpg": (real_jpeg, "ok"),
}


def write_bad_folder(root: Path) -> Path:
    """Every awkward case in one labelled folder, plus real photos, a symlink loop and an unreadable file."""
    odd = root / "odd"
    odd.mkdir(parents=True)
    for name, (make, _) in BAD.items():
        (odd / name).write_bytes(make())
    # a file name that is not valid UTF-8
    with open(bytes(odd) + b"/caf\xe9.jpg", "wb") as f:
        f.write(jpeg(Image.open(sample_images(2)[1])))
    (odd / "loop").symlink_to(odd, target_is_directory=True)        # symlink loop
    (odd / "unreadable.jpg").symlink_to("/proc/self/mem")             # open works, read fails (EIO), even as root
    return root
