"""Precision: the fp32 backbone graph -> an int8 graph (static QDQ, calibrated on the user's own images) or an
fp16 graph (GPU). Each is its own embedding set: its vectors are never mixed with fp32 ones.

int8: ONNX Runtime's static quantisation, QDQ format, per-channel int8 weights, uint8 activations with MinMax
ranges from a seeded sample of the folder being embedded. Weights use a reduced (7-bit) range: without it, AVX2
CPUs without VNNI saturate int8 products, so the same graph would give different vectors on different CPUs (and
worse ones: mean cosine to fp32 0.89 instead of 0.97 on flowers). The calibrated graph is kept in the store
(`models/`), since it belongs to that data, and reused by every later int8 embed of the same backbone, so an int8
set stays one set. How close it is to fp32 (cosine on the calibration sample) is measured and recorded beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from featstore import runtimes
from featstore.models.catalog import ModelSpec
from featstore.errors import FeatstoreError
from featstore.hashing import file_sha256
from featstore.models.session import run_once

PRECISIONS = ("fp32", "int8", "fp16")
CALIBRATION_IMAGES = 128
QUANT_FORMAT = 1            # bump when the quantisation recipe changes


def check(precision: str, device: str) -> None:
    if precision not in PRECISIONS:
        raise FeatstoreError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device != "cuda":
        raise FeatstoreError("--precision fp16 is for the GPU (--device cuda): ONNX Runtime's CPU provider has no "
                             "fast fp16 convolutions; on the CPU use fp32 or int8")
    if precision == "int8" and device == "cuda":
        raise FeatstoreError("--precision int8 is for the CPU (the CUDA provider runs QDQ graphs slowly); on the GPU "
                             "use fp16")


# ---- int8 ------------------------------------------------------------------------------------------------------
def int8_graph(spec: ModelSpec, fp32_path: Path, store_root: Path, calibrate, reuse: list[str], log=print) -> Path:
    """An int8 graph for this backbone: one already calibrated for this store (any path in `reuse` made from the
    same fp32 graph), else a new one calibrated on `calibrate()`: (normalised batch of up to CALIBRATION_IMAGES
    of the user's images, their content hashes)."""
    source_sha = file_sha256(fp32_path)
    for path in reuse:
        info = read_info(Path(path))
        if info and info.get("source_sha256") == source_sha and info.get("format") == QUANT_FORMAT:
            return Path(path)
    batch, used = calibrate()
    key = hashlib.sha256(json.dumps({"source": source_sha, "calibration": used, "format": QUANT_FORMAT})
                         .encode()).hexdigest()[:16]
    target = Path(store_root) / "models" / f"{spec.name}-int8-{key}.onnx"
    if not target.is_file():
        log(f"quantising {spec.name} to int8 (static, calibrated on {len(used)} of your images) ...")
        target.parent.mkdir(parents=True, exist_ok=True)
        quantize(fp32_path, target, batch)
        cos = agreement(fp32_path, target, batch)
        write_info(target, {"source_sha256": source_sha, "format": QUANT_FORMAT, "calibration_hashes": used,
                            "method": "static QDQ, per-channel, reduced-range int8 weights, uint8 activations, MinMax",
                            "cosine_to_fp32_mean": float(cos.mean()), "cosine_to_fp32_min": float(cos.min())})
        log(f"int8 graph: cosine to fp32 on the calibration images mean {cos.mean():.4f}, min {cos.min():.4f}")
    return target


def quantize(fp32_path: Path, target: Path, batch: np.ndarray) -> None:
    runtimes.onnxruntime()      # one line naming the extras if ONNX Runtime is missing
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.chunks = iter([{name: batch[i:i + 16]} for i in range(0, len(batch), 16)])

        def get_next(self):
            return next(self.chunks, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "int8.onnx")
        quant_pre_process(str(fp32_path), pre, skip_symbolic_shape=True)
        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        os.replace(out, target)


def agreement(a: Path, b: Path, batch: np.ndarray) -> np.ndarray:
    """Cosine similarity between two graphs' features, image by image."""
    x, y = run_once(a, batch), run_once(b, batch)
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)


def info_path(graph: Path) -> Path:
    return graph.with_suffix(".json")


def read_info(graph: Path) -> dict | None:
    try:
        return json.loads(info_path(graph).read_text()) if graph.is_file() else None
    except (OSError, ValueError):
        return None


def write_info(graph: Path, info: dict) -> None:
    info_path(graph).write_text(json.dumps(info, indent=1))


# ---- fp16 ------------------------------------------------------------------------------------------------------
def fp16_graph(fp32_path: Path, log=print) -> Path:
    """The fp32 graph with fp16 weights and arithmetic (inputs and outputs stay float32), cached beside it."""
    target = fp32_path.with_name(fp32_path.stem + "-fp16.onnx")
    if target.is_file():
        return target
    import onnx
    runtimes.onnxruntime()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    log(f"converting {fp32_path.name} to fp16 (once) ...")
    save_graph(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), target)
    return target


def save_graph(model, target: Path) -> None:
    """Write an ONNX model so that `target` is either absent or complete (temporary file, then rename)."""
    import onnx

    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
