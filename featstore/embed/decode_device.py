"""Decode on the device: the decode stage for a GPU machine, where decoding JPEGs on the cores sets the pace.

nvImageCodec (NVIDIA's codec library; nvJPEG and the GPU's hardware JPEG decoder underneath) decodes the files a
chunk at a time in one batched call, in a thread of its own, ahead of the backbone, and that thread also crops and
resizes the whole chunk on the device into consecutive slots of the batch buffer in one call (device_batch.py), so
that the embed loop's thread only runs the backbone, and decoding chunk n+1 overlaps the backbone on chunk n. No
pixel crosses to the host. Reading and hashing stay on the cores (a thread pool), as does everything nvImageCodec
is not given or fails on: files that are not JPEG, CMYK and 12-bit JPEGs, images over the pixel limit, JPEGs cut
short, and broken files. Those go through the CPU decoder (decode.py) with the same failure records, and their
pixels join the chunk's resize call (resampled by the identity).

Order on the device: the decodes and the staging copies run on a CUDA stream of their own, synchronised once per
chunk before the chunk is resized, so the resize (on ONNX Runtime's stream) only ever reads finished pixels.

Without CUDA the stage runs all the same on nvImageCodec's CPU backend and ONNX Runtime's CPU provider (host
buffers instead of device ones): that is how the test suite exercises it on machines without a GPU.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from featstore.embed.cuda_runtime import cuda
from featstore.embed.decode import Prepared, pixels_into, read_hashed
from featstore.embed.device_batch import SlotRing, to_host
from featstore.embed.source import SourceFile
from featstore.models.catalog import Preprocess
from featstore.models.images import MAX_PIXELS
from featstore.models.resize_graph import supported

CHUNK = 64                 # files per batched nvImageCodec call, and slots per region of the ring


def ring_regions(window: int, batch_size: int) -> int:
    """Regions the ring needs so the decode thread never waits on itself: the chunks decoded ahead (the window,
    rounded up to chunks), the chunk being decoded, and those the batch being filled spans."""
    return chunks_ahead(window) + 1 + -(-batch_size // CHUNK) + 1


def ring_slots(window: int, batch_size: int) -> int:
    return ring_regions(window, batch_size) * CHUNK


def chunks_ahead(window: int) -> int:
    return max(1, -(-window // CHUNK))


def open_decoder(pre: Preprocess, device: str, window: int, batch_size: int) -> "DeviceDecoder":
    """The decoder of a run decoding `window` files ahead into batches of `batch_size`, with its ring of slots."""
    return DeviceDecoder(device, SlotRing(ring_regions(window, batch_size), pre, device, CHUNK))


def unavailable(pre: Preprocess) -> str | None:
    """Why device decode cannot run for this preprocessing here, or None when it can."""
    import importlib.util

    try:
        found = importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except ImportError:             # no nvidia namespace at all
        found = False
    if not found:
        return "nvImageCodec is not installed (pip install 'featstore[gpu]')"
    return supported(pre)


def self_test(pre: Preprocess, device: str) -> str | None:
    """Decode and resize one generated JPEG through this stage on `device`, against the CPU decoder: None
    when the pixels agree, else what went wrong (a run that chose device decode by itself then decodes on the
    cores instead). Catches a machine where the libraries load but do not work together."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    y, x = np.mgrid[0:768, 0:1024]                      # larger than any model input: every resize mode fits
    ramp = np.stack([x * 255 // 1023, y * 255 // 767, (x + y) * 255 // 1790], axis=2).astype(np.uint8)
    Image.fromarray(ramp).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    try:
        decoder = DeviceDecoder(device, SlotRing(1, pre, device, CHUNK))
        prep = Prepared(file=None, data=data)           # type: ignore[arg-type]
        with ThreadPoolExecutor(max_workers=1) as pool:
            decoder.decode([prep], pre, pool)
        if decoder.on_device != 1:
            return "nvImageCodec did not decode a plain JPEG"
        got = to_host(decoder.ring.value)[prep.slot]
    except Exception as exc:        # noqa: BLE001  (any failure here means: decode on the cores)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    want = Prepared(file=None)      # type: ignore[arg-type]
    pixels_into(want, data, pre)
    diff = float(np.abs(got.astype(np.int16) - want.pixels).mean())
    return None if diff < 1.0 else f"device pixels differ from the CPU decoder's by {diff:.1f} levels on average"


class DeviceDecoder:
    """nvImageCodec's decoder on `device` ('cuda': its GPU backends, on a stream of its own; 'cpu': its CPU
    backend), putting what it decodes into the slots of `ring`."""

    def __init__(self, device: str, ring: SlotRing):
        import os

        os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")    # its per-file messages: the failure records say it
        from nvidia import nvimgcodec

        self.nv, self.device, self.ring = nvimgcodec, device, ring
        self.stream = cuda().stream() if device == "cuda" else None
        where = {"device_id": 0} if device == "cuda" else {"device_id": nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                                            "backends": [nvimgcodec.Backend(nvimgcodec.CPU_ONLY)]}
        # fancy upsampling: chroma interpolated as libjpeg-turbo (Pillow's decoder) does, not repeated
        self.decoder = nvimgcodec.Decoder(**where, options=":fancy_upsampling=1")
        self.params = nvimgcodec.DecodeParams(apply_exif_orientation=True, color_spec=nvimgcodec.SRGB)
        self.on_device = 0          # images decoded by nvImageCodec
        self.on_cpu = 0             # images decoded by the CPU decoder instead

    def takes(self, data: bytes):
        """The code stream nvImageCodec is given this file as, or None for the CPU decoder (which also decides
        about a JPEG that stops before its end: the GPU's hardware decoder returns an image for it where Pillow
        records the file as failed, so it must not be given one)."""
        if not whole_jpeg(data):
            return None
        try:
            cs = self.nv.CodeStream(data)
            ok = (cs.codec_name == "jpeg" and cs.num_channels in (1, 3) and cs.width * cs.height <= MAX_PIXELS
                  and cs.precision in (0, 8))
        except Exception:           # noqa: BLE001  (not an image nvImageCodec knows: the CPU decoder says why)
            return None
        return cs if ok else None

    def decode(self, preps: list[Prepared], pre: Preprocess, fallback: ThreadPoolExecutor) -> None:
        """Decode the readable, not yet stored files of `preps` (a chunk) and resize them all into ring slots in
        one call (`slot`, `width`, `height`): decoded on the device where nvImageCodec takes them, else on the CPU
        in the `fallback` pool."""
        todo = [(p, self.takes(p.data)) for p in preps if p.data is not None]
        streams = [(p, cs) for p, cs in todo if cs is not None]
        cpu = [p for p, cs in todo if cs is None]
        decoded = []
        if streams:
            images = self.decoder.decode([cs for _, cs in streams], params=self.params,
                                         cuda_stream=self.stream or 0)
            for (p, _), img in zip(streams, images):
                if img is None:
                    cpu.append(p)
                else:
                    p.height, p.width = img.shape[:2]
                    decoded.append((p, img))
        self.on_device += len(decoded)
        self.on_cpu += len(cpu)
        for p, done in [(p, fallback.submit(_timed, pixels_into, p, p.data, pre)) for p in cpu]:
            p.seconds += done.result()
        sources = decoded + [(p, p.pixels) for p in cpu if p.pixels is not None]
        slots = self.ring.resize_into([src for _, src in sources], self.stream)
        for (p, _), slot in zip(sources, slots):
            p.slot, p.pixels = slot, None
        for p in preps:
            p.data = None


def whole_jpeg(data: bytes) -> bool:
    """Whether a JPEG's data runs to its end marker (EOI) after its last scan (SOS); a thumbnail inside the EXIF
    block has an end marker of its own, before the main image's scan, so a cut file is not taken for whole."""
    if data[:2] != b"\xff\xd8":
        return True                         # not a JPEG: nvImageCodec or the CPU decoder says what it is
    if data.rstrip(b"\x00")[-2:] == b"\xff\xd9":
        return True
    scan = data.rfind(b"\xff\xda")
    return scan >= 0 and data.find(b"\xff\xd9", scan + 2) >= 0


def device_decoded(todo: list[SourceFile], pre: Preprocess, known: set, workers: int, window: int, clock,
                   decoder: DeviceDecoder):
    """Prepared files in listing order: read and hashed by `workers` threads, decoded a chunk at a time by
    `decoder` in a thread of its own, at most `window` files (rounded up to whole chunks) ahead."""
    def read(f: SourceFile) -> Prepared:
        if f.error:
            return Prepared(file=f, error=f.error)
        t0 = time.thread_time()
        prep = read_hashed(f.path)
        prep.file = f
        if prep.hash in known:
            prep.data = None                       # stored already: hashed, not decoded
        prep.seconds = time.thread_time() - t0
        return prep

    def decode(reads: list) -> list[Prepared]:
        preps = [r.result() for r in reads]
        decoder.decode(preps, pre, pool)
        return preps

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featstore-read") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="featstore-nvdecode") as device:
        chunks = (todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK))
        pending: deque = deque()

        def submit() -> None:
            files = next(chunks, None)
            if files is not None:
                pending.append(device.submit(decode, [pool.submit(read, f) for f in files]))

        for _ in range(chunks_ahead(window)):
            submit()
        try:
            while pending:
                t0 = time.perf_counter()
                preps = pending.popleft().result()
                clock.add("waiting for decode", time.perf_counter() - t0)
                submit()
                for prep in preps:
                    clock.add("decode CPU (workers)", prep.seconds)
                    yield prep
        finally:
            decoder.ring.close()            # a run that stops early: the decode thread must not wait for slots


def _timed(fn, *args) -> float:
    t0 = time.thread_time()
    fn(*args)
    return time.thread_time() - t0


