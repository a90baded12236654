"""Decode on the device: the decode stage for a GPU machine, where decoding JPEGs on the cores sets the pace.

nvImageCodec (NVIDIA's codec library; nvJPEG and the GPU's hardware JPEG decoder underneath) decodes the files a
chunk at a time in one batched call, in a thread of its own one chunk ahead, and the crop/resize runs on the
device too: an ONNX graph (models/resize_graph.py) on the backbone's provider writes each image's pixels straight
into its slot of the batch, a device buffer that the backbone's fused uint8 graph reads through IO binding. No
pixel crosses to the host. Reading and hashing stay on the cores (a thread pool), as does everything nvImageCodec
is not given or fails on: files that are not JPEG, CMYK and 12-bit JPEGs, images too large for the pixel limit,
geometries the graph has no exact region for, and broken files. Those go through the CPU decoder (decode.py) with
the same failure records, and their pixels are copied into the slot by the same graph.

Order on the device: the decodes run on a stream of their own, synchronised once per chunk before the chunk's
images are handed on, so the resize (on ONNX Runtime's stream) only ever reads finished pixels.

Without CUDA the stage runs all the same on nvImageCodec's CPU backend and ONNX Runtime's CPU provider (host
buffers instead of device ones): that is how the test suite exercises it on machines without a GPU.
"""
from __future__ import annotations

import ctypes
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from featstore.embed.decode import Prepared, pixels_into, read_hashed
from featstore.embed.source import SourceFile
from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess
from featstore.models.images import MAX_PIXELS
from featstore.models.resize_graph import geometry, resize_graph, supported

CHUNK = 64                 # files per batched nvImageCodec call


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
        decoder = DeviceDecoder(device)
        prep = Prepared(file=None, data=data)           # type: ignore[arg-type]
        with ThreadPoolExecutor(max_workers=1) as pool:
            decoder.decode([prep], pre, pool)
        if decoder.on_device != 1:
            return "nvImageCodec did not decode a plain JPEG"
        batch = DeviceBatch(1, pre, device)
        batch.add(prep)
        got = batch.value.numpy()[0] if device == "cpu" else _to_host(batch.value)[0]
    except Exception as exc:        # noqa: BLE001  (any failure here means: decode on the cores)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    want = Prepared(file=None)      # type: ignore[arg-type]
    pixels_into(want, data, pre)
    diff = float(np.abs(got.astype(np.int16) - want.pixels).mean())
    return None if diff < 1.0 else f"device pixels differ from the CPU decoder's by {diff:.1f} levels on average"


def _to_host(value) -> np.ndarray:
    """A device OrtValue's contents on the host (through a one-node graph on its provider)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from featstore.models.session import providers

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, value.shape())
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, value.shape())
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "copy", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=providers(value.device_name()))
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", value)
    binding.bind_output("y", "cpu")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


class DeviceDecoder:
    """nvImageCodec's decoder on `device`: 'cuda' (its GPU backends, on a stream of its own) or 'cpu'."""

    def __init__(self, device: str):
        import os

        os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")    # its per-file messages: the failure records say it
        from nvidia import nvimgcodec

        self.nv = nvimgcodec
        self.device = device
        self.stream = _cuda().stream() if device == "cuda" else None
        if device == "cuda":
            self.decoder = nvimgcodec.Decoder(device_id=0)
        else:
            self.decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                              backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)])
        self.params = nvimgcodec.DecodeParams(apply_exif_orientation=True, color_spec=nvimgcodec.SRGB)
        self.on_device = 0          # images decoded by nvImageCodec
        self.on_cpu = 0             # images decoded by the CPU decoder instead

    def takes(self, data: bytes):
        """The code stream nvImageCodec is given this file as, or None for the CPU decoder."""
        try:
            cs = self.nv.CodeStream(data)
            ok = (cs.codec_name == "jpeg" and cs.num_channels in (1, 3) and cs.width * cs.height <= MAX_PIXELS
                  and cs.precision in (0, 8))
        except Exception:           # noqa: BLE001  (not an image nvImageCodec knows: the CPU decoder says why)
            return None
        return cs if ok else None

    def decode(self, preps: list[Prepared], pre: Preprocess, fallback: ThreadPoolExecutor) -> None:
        """Decode the readable, not yet stored files of `preps` in place: on the device where nvImageCodec takes
        them (`image`, `width`, `height`), else on the CPU (`pixels`) in the `fallback` pool."""
        todo = [(p, self.takes(p.data)) for p in preps if p.data is not None]
        streams = [(p, cs) for p, cs in todo if cs is not None]
        cpu = [p for p, cs in todo if cs is None]
        if streams:
            images = self.decoder.decode([cs for _, cs in streams], params=self.params,
                                         cuda_stream=self.stream or 0)
            if self.stream:
                _cuda().synchronize(self.stream)
            for (p, _), img in zip(streams, images):
                h, w = (img.shape[0], img.shape[1]) if img is not None else (0, 0)
                if img is None or geometry(w, h, pre) is None:
                    cpu.append(p)
                else:
                    p.image, p.width, p.height = img, w, h
        self.on_device += len(todo) - len(cpu)
        self.on_cpu += len(cpu)
        for p, done in [(p, fallback.submit(_timed, pixels_into, p, p.data, pre)) for p in cpu]:
            p.seconds += done.result()
        for p in preps:
            p.data = None


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

        for _ in range(max(1, -(-window // CHUNK))):
            submit()
        while pending:
            t0 = time.perf_counter()
            preps = pending.popleft().result()
            clock.add("waiting for decode", time.perf_counter() - t0)
            submit()
            for prep in preps:
                clock.add("decode CPU (workers)", prep.seconds)
                yield prep


class DeviceBatch:
    """The batch as a buffer on the backbone's device, (batch, size, size, 3) uint8, filled slot by slot by the
    crop/resize graph (device-decoded images) or by the same graph copying CPU-decoded pixels in; the item rows
    ride along as in local.Batch."""

    def __init__(self, size: int, pre: Preprocess, device: str):
        import onnxruntime as ort

        from featstore.models.session import providers, session_options

        self.pre, self.device = pre, device
        self.value = ort.OrtValue.ortvalue_from_shape_and_type([size, pre.size, pre.size, 3], np.uint8, device, 0)
        self.capacity = size
        self._slot_bytes = pre.size * pre.size * 3
        self._session = ort.InferenceSession(resize_graph(pre).SerializeToString(), session_options(1),
                                             providers=providers(device))
        self._copy = geometry(pre.size, pre.size, Preprocess(size=pre.size, resize="exact"))   # the identity
        self.hashes: list[str] = []
        self.rows: list[dict] = []

    def add(self, prep: Prepared) -> None:
        if prep.image is not None:
            img = prep.image
            on_device = getattr(img, "cuda_stream", None) is not None
            interface = img.__cuda_array_interface__ if on_device else img.__array_interface__
            if not _dense(interface):          # padded rows: through the host, correct if slower
                img, on_device = np.ascontiguousarray(np.asarray(img.cpu())), False
                interface = img.__array_interface__
            shape, ptr = interface["shape"], interface["data"][0]
            self._resize(ptr, shape, "cuda" if on_device else "cpu", geometry(shape[1], shape[0], self.pre))
            prep.image = None
        else:
            pixels = np.ascontiguousarray(prep.pixels)
            self._resize(pixels.ctypes.data, pixels.shape, "cpu", self._copy, keep=pixels)
        self.hashes.append(prep.hash)

    def _resize(self, ptr: int, shape, where: str, geo: dict, keep=None) -> None:
        binding = self._session.io_binding()
        binding.bind_input("image", where, 0, np.uint8, list(shape), ptr)
        for name, value in geo.items():
            binding.bind_cpu_input(name, value)
        slot = self.value.data_ptr() + len(self.hashes) * self._slot_bytes
        binding.bind_output("pixels", self.device, 0, np.uint8, [self.pre.size, self.pre.size, 3], slot)
        self._session.run_with_iobinding(binding)
        del keep                               # the host pixels lived until the run had read them

    @property
    def full(self) -> bool:
        return len(self.hashes) == self.capacity

    def clear(self) -> None:
        self.hashes, self.rows = [], []

    def run(self, backbone, pre: Preprocess) -> np.ndarray:
        return backbone.run_value(self.value, len(self.hashes), pre)


def _dense(interface: dict) -> bool:
    strides = interface.get("strides")
    h, w, c = interface["shape"]
    return strides is None or tuple(strides) == (w * c, c, 1)


def _timed(fn, *args) -> float:
    t0 = time.thread_time()
    fn(*args)
    return time.thread_time() - t0


class _CudaRuntime:
    """The two CUDA runtime calls this stage needs (a stream, and waiting for it), through ctypes on the
    libcudart that onnxruntime-gpu's CUDA wheels bring."""

    def __init__(self):
        self.lib = _load_cudart()

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreateWithFlags(ctypes.byref(s), 1), "cudaStreamCreateWithFlags")   # non-blocking
        return s.value

    def synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status:
            raise FeatstoreError(f"device decode: {call} failed (CUDA error {status})")


def _load_cudart():
    """libcudart: from the nvidia-* pip packages (CUDA 12's nvidia/cuda_runtime/lib, CUDA 13's nvidia/cu13/lib),
    else wherever the system's loader finds it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nvidia")
    roots = [Path(d) for d in (spec.submodule_search_locations or [])] if spec else []
    found = sorted(str(p) for root in roots for p in (*root.glob("cuda_runtime/lib/libcudart.so*"),
                                                      *root.glob("cu*/lib/libcudart.so*")))
    for path in found + ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    raise FeatstoreError("device decode: no CUDA runtime library (libcudart) found; install featstore[gpu]")


_runtime: list = []


def _cuda() -> _CudaRuntime:
    if not _runtime:
        _runtime.append(_CudaRuntime())
    return _runtime[0]
