"""Crop and resize as an ONNX graph: the preprocessing step for images decoded on the GPU, run where they already are.

The graph takes one decoded image (H, W, 3) uint8 and the geometry of featstore's one preprocessing rule
(`preprocess.crop_resize`) as small inputs, and returns the model's (size, size, 3) uint8 input. Whatever the
resize mode, each output pixel samples a box of the source image (the centre crop's box; the resized image's
window mapped back), and Pillow's resampling of that box is reproduced: Slice (whole pixels around the box, one
of margin) -> Resize in "tf_crop_and_resize" mode with the box as its region of interest (the same sample
positions as Pillow's, fractional box included), cubic with a = -0.5, linear or nearest, antialiased and with
weights renormalised inside the image as Pillow does -> Round, Clip, Cast. It runs on the backbone's provider,
so on CUDA the pixels never leave the device.

Pillow computes in fixed point with an 8-bit rounding between its two passes, this graph in float: pixels differ
by a fraction of a level on average, so device decode is checked by features (cosine), not by pixel equality.
An image whose samples would reach past its border (upscaling with no margin around the box: "exact" on a small
image) has no exact region here, and `geometry` returns None for it: the caller decodes that one on the CPU.
"""
from __future__ import annotations

import math

import numpy as np

from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess
from featstore.models.preprocess import centre_box, resize_then_crop

_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}


def supported(p: Preprocess) -> str | None:
    """None when the graph reproduces this preprocessing; else why not (the caller decodes on the CPU)."""
    if p.interpolation not in _MODES:
        return f"{p.interpolation} resampling has no ONNX Resize mode"
    return None


def resize_graph(p: Preprocess):
    """The ONNX model (opset 18) for preprocessing `p`; see the module's docstring."""
    from onnx import TensorProto, helper, numpy_helper

    why = supported(p)
    if why:
        raise FeatstoreError(f"device decode: {why}")
    mode = _MODES[p.interpolation]
    resize = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize"}
    if mode == "cubic":
        resize["cubic_coeff_a"] = -0.5
    if mode != "nearest":
        resize.update(antialias=1, exclude_outside=1)
    else:
        resize["nearest_mode"] = "round_prefer_ceil"
    inputs = [helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3]),
              helper.make_tensor_value_info("crop_starts", TensorProto.INT64, [2]),
              helper.make_tensor_value_info("crop_ends", TensorProto.INT64, [2]),
              helper.make_tensor_value_info("roi", TensorProto.FLOAT, [8])]
    # (1, 3, H, W) for the Resize: the layout every provider's Resize (antialiased cubic included) takes
    nodes = [helper.make_node("Slice", ["image", "crop_starts", "crop_ends", "axes"], ["cropped"]),
             helper.make_node("Cast", ["cropped"], ["cropped_float"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["cropped_float"], ["chw"], perm=[2, 0, 1]),
             helper.make_node("Unsqueeze", ["chw", "batch_axis"], ["nchw"]),
             helper.make_node("Resize", ["nchw", "roi", "", "sizes"], ["resized"], **resize),
             helper.make_node("Squeeze", ["resized", "batch_axis"], ["resized_chw"]),
             helper.make_node("Transpose", ["resized_chw"], ["resized_hwc"], perm=[1, 2, 0]),
             helper.make_node("Round", ["resized_hwc"], ["rounded"]),
             helper.make_node("Clip", ["rounded", "lo", "hi"], ["clipped"]),
             helper.make_node("Cast", ["clipped"], ["pixels"], to=TensorProto.UINT8)]
    inits = [numpy_helper.from_array(np.array([0, 1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0], np.int64), "batch_axis"),
             numpy_helper.from_array(np.array([1, 3, p.size, p.size], np.int64), "sizes"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(255, np.float32), "hi")]
    out = helper.make_tensor_value_info("pixels", TensorProto.UINT8, [p.size, p.size, 3])
    graph = helper.make_graph(nodes, "featstore_crop_resize", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def source_boxes(width: int, height: int, p: Preprocess) -> tuple[tuple[float, float], tuple[float, float]]:
    """The (start, length) in source pixels that the model's input covers, rows then columns: `crop_resize`'s
    centre box, or for a resize then a crop, the crop's window mapped back onto the source."""
    if p.resize == "exact":
        return (0.0, float(height)), (0.0, float(width))
    if p.resize == "shorter-side-then-crop":
        nw, nh, top, left = resize_then_crop(width, height, p)
        return (top * height / nh, p.size * height / nh), (left * width / nw, p.size * width / nw)
    left, top, side = centre_box(width, height, p)
    return (top, side), (left, side)


def geometry(width: int, height: int, p: Preprocess) -> dict[str, np.ndarray] | None:
    """The graph's inputs besides the image for an image of width x height, or None when its samples would
    reach past the image's border (see the module's docstring)."""
    starts, ends, roi_lo, roi_hi = [], [], [], []
    for (box_start, box_len), length in zip(source_boxes(width, height, p), (height, width)):
        lo = max(0, math.floor(box_start) - 1)
        hi = min(length, math.ceil(box_start + box_len) + 1)
        if hi - lo == p.size:            # ONNX Runtime copies an axis whose size is unchanged, ignoring the region
            if hi < length:
                hi += 1
            elif lo > 0:
                lo -= 1
            elif box_start != 0 or box_len != length:
                return None
        if hi - lo < 2:
            return None
        step = box_len / p.size                                # source pixels per output pixel
        first = box_start - lo + 0.5 * step - 0.5               # Pillow's first and last sample, crop coordinates
        last = first + (p.size - 1) * step
        if first < 0 or last > hi - lo - 1:
            return None
        span = hi - lo - 1                                     # tf_crop_and_resize: x = roi_lo*span + i*(roi_hi-roi_lo)*span/(n-1)
        starts.append(lo)
        ends.append(hi)
        roi_lo.append(first / span)
        roi_hi.append((first + (p.size - 1) * step) / span if p.size > 1 else first / span)
    return {"crop_starts": np.array(starts, np.int64), "crop_ends": np.array(ends, np.int64),
            "roi": np.array([0, 0, *roi_lo, 1, 1, *roi_hi], np.float32)}
