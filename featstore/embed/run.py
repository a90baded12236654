"""Run: an exported backbone in ONNX Runtime (CUDA when asked or available, else the CPU). No torch here.

Session choices (recorded with every embed run, see `config`): full graph optimisation; intra-op threads = the
cores, run in sequential (not parallel-branch) mode; and no spin-waiting between operators, because decode workers
share those cores during an embed and a spinning pool would burn the time they need. On CUDA the input batch is
copied once into a device buffer that is reused (IO binding), and outputs come back to the host directly; the
buffer keeps the largest batch shape seen and a shorter (last) batch is padded into it, so cuDNN chooses its
convolution algorithms once per session rather than once per new shape. CUDA and cuDNN libraries installed as pip
packages (`onnxruntime-gpu[cuda,cudnn]`, which the `gpu` extra asks for) are loaded with ONNX Runtime's
`preload_dlls` before the first CUDA session, as its documentation says to.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_BATCH = {"cpu": 32, "cuda": 128}   # CPU throughput is flat beyond ~8; a GPU wants bigger batches


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load the CUDA/cuDNN shared libraries that pip packages ship (nvidia-*), once per process. Whatever cannot be
    loaded here is caught later: the session check sees the provider missing and says so."""
    import contextlib
    import io

    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls(msvc=False)


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        _preload_cuda_libraries()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise FeatstoreError("--device cuda: this onnxruntime has no CUDA provider "
                                 f"(available: {', '.join(available)}); install featstore[gpu]")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    raise FeatstoreError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")


def provider_class(device_used: str) -> str:
    """The provider class that goes into an embedding set's key: 'cpu' or 'cuda'."""
    return "cuda" if device_used == "cuda" else "cpu"


def expected_device(device: str) -> str:
    """The device a session for this request will use: 'cuda' or 'cpu' (checked when the session starts)."""
    return "cuda" if "CUDAExecutionProvider" in _providers(device) else "cpu"


class Backbone:
    """One ONNX Runtime session over an exported backbone: NCHW float32 in, pooled features out.

    The session starts on first use, so a run with nothing to embed never pays for it. `device` is known before
    (it is part of the embedding-set key) and checked against the providers the session really uses.
    """

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int | None = None, spin: bool = False,
                 io_binding: bool | None = None, pixels_in_graph: bool | None = None):
        self.onnx_path = Path(onnx_path)
        self.requested = device
        self.device = expected_device(device)
        self.threads = threads or os.cpu_count() or 1
        self.spin = spin
        self._session = None
        self._device_input = None       # IO binding: the reused device buffer the input batch is copied into
        self._host_input = None         # ... and the host array a short batch is padded in
        self._tensor = None             # run_pixels on the host: the reused NCHW float32 buffer it normalises into
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding   # (on the CPU: for tests)
        # run_pixels on CUDA: normalise inside the graph (graph_input), so the host sends uint8 and does no float pass
        self.pixels_in_graph = self.device == "cuda" if pixels_in_graph is None else pixels_in_graph
        self._pixels_for = None         # the preprocessing fused into the graph, once run_pixels has fused it

    @property
    def session(self):
        if self._session is None:
            self._session = self._start()
        return self._session

    def _start(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = True
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.onnx_path), sess_options=opts, providers=_providers(self.requested))
        except Exception as exc:
            raise FeatstoreError(f"{self.onnx_path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None
        active = session.get_providers()
        # Trust what the session uses, not what was requested: CUDA can silently fall back to the CPU.
        used = "cuda" if "CUDAExecutionProvider" in active else "cpu"
        if used != self.device:
            raise FeatstoreError(f"--device {self.requested}: expected the {self.device} provider but the session "
                                 f"runs on {', '.join(active)}; pass --device cpu to embed on the CPU")
        self.input_name = session.get_inputs()[0].name
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(session.get_inputs()[0].type,
                                                                                        np.float32)
        self.output_name = session.get_outputs()[0].name
        return session

    def config(self) -> dict:
        """The session choices, as recorded with each run (providers: those the session really uses; None when
        the run needed no session)."""
        return {"device": self.device, "providers": self._session.get_providers() if self._session else None,
                "intra_op_threads": self.threads,
                "execution_mode": "sequential", "graph_optimization": "all", "spin_wait": self.spin,
                "cpu_mem_arena": True, "io_binding": self.io_binding, "onnx": self.onnx_path.name,
                "normalise": "in the graph" if self._pixels_for else "on the host"}

    def run_pixels(self, pixels: np.ndarray, pre) -> np.ndarray:
        """Features for a batch as decoded (NHWC uint8, preprocessing `pre`): normalised inside the graph when
        `pixels_in_graph` (the first call, before the session starts, swaps in the fused graph), else on the host
        into a float32 buffer reused from batch to batch (reallocated only for a bigger batch or another size)."""
        from featstore.models.preprocess import normalise

        if self.pixels_in_graph and self._pixels_for is None and self._session is None:
            from featstore.models.graph_input import pixel_input_graph

            try:
                self.onnx_path, self._pixels_for = pixel_input_graph(self.onnx_path, pre), pre
            except OSError:                 # the home is not writable: normalise on the host, as on the CPU
                self.pixels_in_graph = False
        if self._pixels_for is None:
            shape = (len(pixels), 3) + pixels.shape[1:3]
            if self._tensor is None or self._tensor.shape[1:] != shape[1:] or len(self._tensor) < len(pixels):
                self._tensor = np.empty(shape, np.float32)
            return self.run(normalise(pixels, pre, out=self._tensor))
        if (self._pixels_for.mean, self._pixels_for.std) != (pre.mean, pre.std):
            raise FeatstoreError("this session normalises pixels for another preprocessing")
        return self.run(pixels)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Features for one batch of images, float32 (N, dim)."""
        self.session  # noqa: B018  (starts the session, which names the input)
        batch = np.ascontiguousarray(batch, self.input_dtype)
        if self.io_binding:
            return self._run_bound(batch)
        return self.run_feeds({self.input_name: batch})

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """IO binding: host batch -> a reused device buffer (one copy), features straight to the host. The buffer
        is reallocated only for a bigger batch or another image shape; a smaller batch is padded into it (rows
        left from the previous batch are computed and dropped), so the session sees one input shape."""
        import onnxruntime as ort

        n = len(batch)
        shape = self._device_input.shape() if self._device_input is not None else None
        if shape is None or shape[1:] != list(batch.shape[1:]) or shape[0] < n:
            # a buffer of its own (ortvalue_from_numpy would alias the numpy array on the CPU device)
            self._device_input = ort.OrtValue.ortvalue_from_shape_and_type(list(batch.shape), batch.dtype,
                                                                           self.device, 0)
            self._host_input = np.zeros(batch.shape, batch.dtype)
        if n < self._host_input.shape[0]:
            self._host_input[:n] = batch
            batch = self._host_input
        self._device_input.update_inplace(batch)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, self._device_input)
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        out = binding.copy_outputs_to_cpu()[0][:n]
        return np.asarray(out, dtype=np.float32).reshape(n, -1)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Features for one batch given every named input (text models: token ids, mask, type ids)."""
        session = self.session
        out = session.run([self.output_name], {k: feeds[k] for k in self.input_names})[0]
        return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)


def probe_dim(onnx_path: str | Path, size: int) -> int:
    """Output dimension of a user's ONNX backbone, found by running one blank image through it."""
    out = Backbone(onnx_path, device="cpu").run(np.zeros((1, 3, size, size), np.float32))
    return int(out.shape[1])
