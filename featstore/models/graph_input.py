"""Pixel input: a backbone graph with the last preprocessing step fused in front of it, for the GPU.

The graph takes the batch as decoded, NHWC uint8, and does the cast, the NHWC -> NCHW transpose and the per-channel
(x - mean) / std itself, so the host neither normalises (a float pass over the whole batch in the embed loop's one
thread) nor copies four bytes per pixel to the device instead of one. Same features as normalising on the host
(`preprocess.normalise`); cached in the featstore home, one file per source graph and normalisation.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from featstore.models.catalog import Preprocess
from featstore.home import exports_dir
from featstore.models.precision import save_graph

PIXELS = "pixels"          # the fused graph's input: (batch, size, size, 3) uint8


def pixel_input_graph(onnx_path: Path, p: Preprocess) -> Path:
    """`onnx_path` with uint8 NHWC input and the normalisation of `p` inside, written once into the featstore
    home (never beside a user's own ONNX file), keyed by the source file (path, size, mtime) and the normalisation."""
    st = onnx_path.stat()
    key = hashlib.sha256(repr((str(onnx_path.resolve()), st.st_size, st.st_mtime_ns, tuple(p.mean),
                               tuple(p.std))).encode()).hexdigest()[:16]
    target = exports_dir() / "pixel-input" / f"{onnx_path.stem}-{key}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        save_graph(fuse(onnx_path, p), target)
    return target


SLOTS, ROWS = "slots", "rows"   # the gathering graph's inputs: (slots, size, size, 3) uint8 and (batch,) int64


def gathering_graph(pixel_graph: Path) -> Path:
    """A pixel-input graph (from pixel_input_graph) with a Gather in front: it takes a buffer of image slots and
    the slot of each batch row, so images decoded into slots on the device are batched without being copied
    (decode_device.py). Written once into the featstore home beside its source."""
    import onnx
    from onnx import TensorProto, helper

    target = pixel_graph.with_name(pixel_graph.stem + "-gather.onnx")
    if not target.is_file() or target.stat().st_mtime_ns < pixel_graph.stat().st_mtime_ns:
        model = onnx.load(str(pixel_graph))
        graph = model.graph
        pixels = next(i for i in graph.input if i.name == PIXELS)
        dims = [d.dim_value or d.dim_param for d in pixels.type.tensor_type.shape.dim]
        graph.input.remove(pixels)
        graph.input.insert(0, helper.make_tensor_value_info(ROWS, TensorProto.INT64, ["batch"]))
        graph.input.insert(0, helper.make_tensor_value_info(SLOTS, TensorProto.UINT8, ["slots", *dims[1:]]))
        graph.node.insert(0, helper.make_node("Gather", [SLOTS, ROWS], [PIXELS], axis=0))
        save_graph(model, target)
    return target


def fuse(onnx_path: Path, p: Preprocess):
    """The ONNX model: pixels -> Cast(float) -> Transpose(NCHW) -> Sub(mean) -> Mul(1/std) -> the original graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    original = next(i for i in graph.input if i.name not in inits)
    size = original.type.tensor_type.shape.dim[2]
    pixels = helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, ["batch", size.dim_value or p.size,
                                                                       size.dim_value or p.size, 3])
    mean = numpy_helper.from_array(np.asarray(p.mean, np.float32).reshape(1, 3, 1, 1), "pixels_mean")
    inv_std = numpy_helper.from_array((1 / np.asarray(p.std, np.float32)).reshape(1, 3, 1, 1), "pixels_inv_std")
    nodes = [helper.make_node("Cast", [PIXELS], ["pixels_float"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["pixels_float"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Sub", ["pixels_nchw", "pixels_mean"], ["pixels_centred"]),
             helper.make_node("Mul", ["pixels_centred", "pixels_inv_std"], [original.name])]
    graph.input.remove(original)
    graph.input.insert(0, pixels)
    graph.initializer.extend([mean, inv_std])
    for node in reversed(nodes):
        graph.node.insert(0, node)
    return model
