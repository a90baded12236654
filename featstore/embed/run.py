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

import os
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError
from featstore.models.graph_input import ROWS, SLOTS
from featstore.models.preprocess import normalise
from featstore.models.session import expected_device, open_session

DEFAULT_BATCH = {"cpu": 32, "cuda": 128}   # CPU throughput is flat beyond ~8; a GPU wants bigger batches


class Backbone:
    """One ONNX Runtime session over an exported backbone: NCHW float32 in, pooled features out.

    The session starts on first use, so a run with nothing to embed never pays for it. `device` is known before
    (it is part of the embedding-set key) and checked against the providers the session really uses.
    """

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int | None = None, spin: bool = False,
                 io_binding: bool | None = None, pixels_for=None):
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
        # a graph made by featstore.models.graph_input: uint8 NHWC in, the normalisation of `pixels_for` inside
        self._pixels_for = pixels_for

    @property
    def session(self):
        if self._session is None:
            self._session = self._start()
        return self._session

    def _start(self):
        session = open_session(self.onnx_path, self.requested, self.threads, self.spin)
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
        """Features for a batch as decoded (NHWC uint8, preprocessing `pre`): normalised inside the graph when it
        was opened on a pixel-input graph (`pixels_for`), else on the host into a float32 buffer reused from batch
        to batch (reallocated only for a bigger batch or another size)."""
        if self._pixels_for is None:
            shape = (len(pixels), 3) + pixels.shape[1:3]
            if self._tensor is None or self._tensor.shape[1:] != shape[1:] or len(self._tensor) < len(pixels):
                self._tensor = np.empty(shape, np.float32)
            return self.run(normalise(pixels, pre, out=self._tensor))
        self._check_normalises(pre)
        return self.run(pixels)

    def _check_normalises(self, pre) -> None:
        """A pixel-input session normalises for one preprocessing; pixels meant for another are refused."""
        if (self._pixels_for.mean, self._pixels_for.std) != (pre.mean, pre.std):
            raise FeatstoreError("this session normalises pixels for another preprocessing")

    @property
    def pixels_for(self):
        """The preprocessing whose normalisation is inside this session's graph, or None (normalised on the host)."""
        return self._pixels_for

    def run_gathered(self, slots, rows: np.ndarray, pre) -> np.ndarray:
        """Features for the images at `rows` of `slots`, an ONNX Runtime buffer of NHWC uint8 images on this
        session's device, over a gathering graph (models.graph_input.gathering_graph): the buffer is bound as it
        is, only the row numbers go over from the host (decode_device.py's batches)."""
        self._check_normalises(pre)
        session = self.session
        binding = session.io_binding()
        binding.bind_ortvalue_input(SLOTS, slots)
        binding.bind_cpu_input(ROWS, rows)
        binding.bind_output(self.output_name, "cpu")
        session.run_with_iobinding(binding)
        out = binding.copy_outputs_to_cpu()[0]
        return np.asarray(out, dtype=np.float32).reshape(len(rows), -1)

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
