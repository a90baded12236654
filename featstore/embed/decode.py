"""Decode: the pipeline stage that turns a listed file into pixels at the model's input size (read, content hash,
decode, crop/resize), never raising for bad input: a file that cannot be read or decoded comes back with the
reason. `decoded` runs it in a thread pool a bounded window ahead; decode_pool.py runs it in processes."""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from featstore.embed.source import SourceFile, not_regular
from featstore.errors import DecodeError, FeatstoreError
from featstore.hashing import content_hash
from featstore.models.catalog import Preprocess
from featstore.models.images import decode_image
from featstore.models.preprocess import crop_resize, draft_target
from featstore.uri import is_uri, read_bytes

MAX_FILE_MB = 512                # refuse larger files before reading them; $FEATSTORE_MAX_FILE_MB overrides


def max_file_bytes() -> int:
    """The most bytes read from one input file ($FEATSTORE_MAX_FILE_MB, default MAX_FILE_MB)."""
    value = os.environ.get("FEATSTORE_MAX_FILE_MB") or MAX_FILE_MB
    try:
        return int(float(value) * (1 << 20))
    except ValueError:
        raise FeatstoreError(f"FEATSTORE_MAX_FILE_MB={value!r}: not a number of megabytes") from None


def too_big() -> DecodeError:
    return DecodeError(f"file is over the {max_file_bytes() / (1 << 20):g} MB limit on what is read "
                       "(FEATSTORE_MAX_FILE_MB)")


@dataclass
class Prepared:
    """A file after the decode stage: its hash and pixels, or the reason it failed."""

    file: SourceFile
    hash: str | None = None
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    seconds: float = 0.0          # CPU time of the worker thread (wall time would count waits for a core)
    data: bytes | None = None     # the file's bytes, while a stage still needs them
    slot: int | None = None       # decode on the device (decode_device.py): the ring slot holding the pixels


def read_pixels(path: str, p: Preprocess, known: set | None = None) -> Prepared:
    """Read, hash, decode and crop/resize one file (the decode stage's unit of work). Never raises for bad input.

    A file whose hash is in `known` (already embedded) is hashed but not decoded.
    """
    t0 = time.thread_time()
    out = read_hashed(path)
    if out.hash is not None and (known is None or out.hash not in known):
        pixels_into(out, out.data, p)
    out.data = None
    out.seconds = time.thread_time() - t0
    return out


def read_hashed(path: str) -> Prepared:
    """A file's bytes (in `data`) and content hash, or the reason it could not be read (in `error`)."""
    out = Prepared(file=None)  # type: ignore[arg-type]
    try:
        out.data = _read_url(path) if is_uri(path) else _read_local(path)
    except DecodeError as exc:    # refused before decoding: not a regular file, too big, changed while read
        out.error = str(exc)
    except FileNotFoundError:
        out.error = "file vanished before it could be read"
    except IsADirectoryError:
        out.error = "is a folder, not a file"
    except OSError as exc:
        out.error = f"cannot read file: {exc.strerror or exc}"
    except FeatstoreError:
        raise
    except Exception as exc:      # noqa: BLE001  (an fsspec backend's own error for one URL: that item fails)
        out.error = f"cannot read URL: {str(exc) or type(exc).__name__}"
    else:
        out.hash = content_hash(out.data)
    return out


def pixels_into(out: Prepared, data: bytes, p: Preprocess) -> None:
    """Decode and crop/resize on the CPU into `out` (pixels, width, height), or record why the image failed."""
    try:
        img = decode_image(data, draft_to=draft_target(p))
        out.width, out.height = img.size
        out.pixels = crop_resize(img, p)
    except DecodeError as exc:
        out.error = str(exc)


def _read_url(url: str) -> bytes:
    """A URL's bytes, at most max_file_bytes() of them (one more is asked for, to tell a bigger object)."""
    cap = max_file_bytes()
    data = read_bytes(url, cap + 1)
    if len(data) > cap:
        raise too_big()
    return data


def _read_local(path: str) -> bytes:
    """The file's bytes, at most max_file_bytes() of them, as one snapshot: a file that is not regular when opened
    (O_NONBLOCK: a FIFO put there since the listing does not block) or changes size while read is refused."""
    cap = max_file_bytes()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind:
            raise DecodeError(f"not a regular file ({kind}), not read")
        if st.st_size > cap:
            raise too_big()
        data = f.read(cap + 1)
        if len(data) > cap:
            raise too_big()
        if len(data) != st.st_size or os.fstat(fd).st_size != st.st_size:
            raise DecodeError(f"file changed while it was read ({st.st_size} bytes when opened, {len(data)} read)")
        return data


def decoded(todo: list[SourceFile], pre: Preprocess, known: set, workers: int, window: int, clock):
    """Prepared files in listing order, decoded by `workers` threads at most `window` files ahead."""
    def work(f: SourceFile) -> Prepared:
        prep = Prepared(file=f, error=f.error) if f.error else read_pixels(f.path, pre, known)
        prep.file = f
        return prep

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featstore-decode") as pool:
        ahead = in_order(pool, work, todo, window)
        while True:
            t0 = time.perf_counter()
            prep = next(ahead, None)
            if prep is None:
                return
            clock.add("waiting for decode", time.perf_counter() - t0)
            clock.add("decode CPU (workers)", prep.seconds)
            yield prep


def in_order(pool, work, items: list, window: int):
    """work(item) for each item, yielded in the items' order, with at most `window` submitted to `pool` ahead."""
    pending: deque = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(work, item))
        if len(pending) >= window:
            break
    while pending:
        out = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(work, nxt))
        yield out
