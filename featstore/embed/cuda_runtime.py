"""The CUDA runtime calls device decode needs (a stream of its own, a pitched copy on it, and waiting for it), through
ctypes on the libcudart that the CUDA pip packages bring: no CUDA Python binding is a dependency."""
from __future__ import annotations

import ctypes

from featstore.errors import FeatstoreError


class CudaRuntime:
    def __init__(self):
        self.lib = _load_cudart()

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreateWithFlags(ctypes.byref(s), 1), "cudaStreamCreateWithFlags")   # non-blocking
        return s.value

    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int,
                stream: int) -> None:
        """Queue a copy of `height` rows of `width` bytes on `stream`, wherever the two buffers are (unified
        addressing: device or host)."""
        size_t = ctypes.c_size_t
        self._check(self.lib.cudaMemcpy2DAsync(ctypes.c_void_p(dst), size_t(dst_pitch), ctypes.c_void_p(src),
                                               size_t(src_pitch), size_t(width), size_t(height),
                                               ctypes.c_int(4), ctypes.c_void_p(stream)),     # cudaMemcpyDefault
                    "cudaMemcpy2DAsync")

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


def cuda() -> CudaRuntime:
    if not _runtime:
        _runtime.append(CudaRuntime())
    return _runtime[0]
