"""ONNX Runtime and FAISS, which come from one of featstore's two extras: `cpu` (onnxruntime, faiss-cpu) or `gpu`
(onnxruntime-gpu, faiss-gpu-cuvs, for CUDA 13). Both builds of each install the same module, so neither is a core
dependency; without one installed, whatever needs it stops with one line naming both extras (`import featstore`
itself needs neither)."""
from __future__ import annotations

import importlib
from importlib import metadata

from featstore.errors import FeatstoreError

INSTALL = 'install featstore with the cpu extra (pip install -c constraints.txt -e ".[cpu]") or, for CUDA, the gpu extra (".[gpu]")'


RUNTIMES = {"onnxruntime": "ONNX Runtime (onnxruntime)", "faiss": "FAISS (faiss)"}


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
    missing = [what for name, what in RUNTIMES.items() if name == module or not _importable(name)]
    verb = "is" if len(missing) == 1 else "are"
    raise FeatstoreError(f"{' and '.join(missing)} {verb} not installed: {INSTALL}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def onnxruntime():
    """The `onnxruntime` module, or a one-line FeatstoreError naming the extras that install it."""
    return _load("onnxruntime")


def faiss():
    """The `faiss` module, or a one-line FeatstoreError naming the extras that install it."""
    return _load("faiss")


def both_builds(cpu: str, gpu: str) -> bool:
    """Whether the CPU and the GPU distribution of one module are both installed (the later install's files won)."""
    def installed(name: str) -> bool:
        try:
            metadata.distribution(name)
            return True
        except metadata.PackageNotFoundError:
            return False
    return installed(cpu) and installed(gpu)
