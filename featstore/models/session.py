"""ONNX Runtime sessions: which providers a device request gets (CUDA libraries from pip preloaded first), the
session options featstore runs with, and a one-shot run for checking a graph (export parity, int8 agreement,
probing a user's model). The embed pipeline's session (featstore.embed.run.Backbone) opens through here too."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError
from featstore.runtimes import both_builds, onnxruntime

DEVICES = ("auto", "cpu", "cuda")


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load the CUDA/cuDNN shared libraries that pip packages ship (nvidia-*), once per process. Whatever cannot be
    loaded here is caught later: the session check sees the provider missing and says so."""
    import contextlib
    import io

    ort = onnxruntime()

    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls(msvc=False)


def providers(device: str) -> list[str]:
    ort = onnxruntime()

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        _preload_cuda_libraries()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            if both_builds("onnxruntime", "onnxruntime-gpu"):
                raise FeatstoreError("--device cuda: this onnxruntime has no CUDA provider: onnxruntime and "
                                     "onnxruntime-gpu are both installed (the cpu and the gpu extra); run pip "
                                     "uninstall -y onnxruntime onnxruntime-gpu, then install featstore[gpu] alone")
            raise FeatstoreError("--device cuda: this onnxruntime has no CUDA provider "
                                 f"(available: {', '.join(available)}); install featstore[gpu] (not featstore[cpu])")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    raise FeatstoreError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")


def provider_class(device_used: str) -> str:
    """The provider class that goes into an embedding set's key: 'cpu' or 'cuda'."""
    return "cuda" if device_used == "cuda" else "cpu"


def expected_device(device: str) -> str:
    """The device a session for this request will use: 'cuda' or 'cpu' (checked when the session starts)."""
    return "cuda" if "CUDAExecutionProvider" in providers(device) else "cpu"


def session_options(threads: int, spin: bool = False):
    """Full graph optimisation, `threads` intra-op threads in sequential mode, no spin-waiting unless asked."""
    ort = onnxruntime()

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.log_severity_level = 3
    return opts


def open_session(onnx_path: str | Path, device: str = "cpu", threads: int = 1, spin: bool = False):
    """An InferenceSession on the providers for `device`; a graph ONNX Runtime cannot load is one clear error."""
    ort = onnxruntime()

    try:
        return ort.InferenceSession(str(onnx_path), sess_options=session_options(threads, spin),
                                    providers=providers(device))
    except Exception as exc:
        raise FeatstoreError(f"{onnx_path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None


def run_once(onnx_path: str | Path, feeds: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
    """The first output of a graph on the CPU for one batch, float32 (N, dim); an array feeds the first input."""
    import os

    session = open_session(onnx_path, "cpu", threads=os.cpu_count() or 1)
    if isinstance(feeds, np.ndarray):
        feeds = {session.get_inputs()[0].name: feeds}
    out = session.run([session.get_outputs()[0].name], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)


def probe_dim(onnx_path: str | Path, size: int) -> int:
    """Output dimension of a user's ONNX backbone, found by running one blank image through it."""
    return int(run_once(onnx_path, np.zeros((1, 3, size, size), np.float32)).shape[1])
