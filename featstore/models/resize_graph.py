"""Crop and resize as an ONNX graph, a chunk of images per call: the preprocessing step for images decoded on the GPU,
run where they already are.

The graph takes a chunk of decoded images padded to one shape, (N, H, W, 3) uint8, with each image's size and the
box of it that featstore's one preprocessing rule (`preprocess.crop_resize`) samples, and returns the model's
inputs, (N, size, size, 3) uint8. It reproduces Pillow's resampling as two matrix products per image: for each
axis, the weights Pillow gives each source pixel for each output pixel (its `precompute_coeffs`: the filter
stretched by the scale when downscaling, taps clipped to the image and renormalised) are built inside the graph
from the box, then the image is resampled across and down by two batched MatMuls. Padding has zero weight, so one
call serves images of any sizes. It runs on the backbone's provider, so on CUDA the pixels never leave the device.

Pillow computes in fixed point and rounds to whole levels between its two passes, in an order that depends on its
version and the image's shape (12.3 began resizing some shapes vertically first); this graph clips between the
passes as Pillow does but keeps them in float and rounds once, so it is within a fraction of a level of Pillow's pixels on average whichever order a
Pillow takes. Device decode is therefore checked by features (cosine), not by pixel equality.
"""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess
from featstore.models.preprocess import centre_box, resize_then_crop

SUPPORT = {"bicubic": 2.0, "bilinear": 1.0, "nearest": 0.0}      # Pillow's filter radii
INPUTS = ("images", "boxes", "extents")


def supported(p: Preprocess) -> str | None:
    """None when the graph reproduces this preprocessing; else why not (the caller decodes on the CPU)."""
    if p.interpolation not in SUPPORT:
        return f"{p.interpolation} resampling is not reproduced on the device"
    return None


def resize_graph(p: Preprocess):
    """The ONNX model (opset 18) for preprocessing `p`: inputs `images` (N, H, W, 3) uint8, `boxes` (N, 4)
    float32 (row start, row length, column start, column length, in source pixels: `source_boxes`), `extents`
    (N, 2) float32 (each image's height and width inside the padding); output `pixels` (N, size, size, 3)."""
    from onnx import TensorProto, helper, numpy_helper

    why = supported(p)
    if why:
        raise FeatstoreError(f"device decode: {why}")
    g = _Graph(p)
    g.node("Cast", ["images"], to=TensorProto.FLOAT, out="x")                         # (N, H, W, 3)
    g.node("Transpose", ["x"], perm=[0, 3, 1, 2], out="nchw")                          # (N, 3, H, W)
    g.node("Shape", ["images"], out="shape")
    for axis, name in ((1, "rows"), (2, "cols")):
        g.node("Slice", ["shape", g.const([axis]), g.const([axis + 1])], out=f"{name}_len")
        g.node("Slice", ["boxes", g.const([2 * axis - 2]), g.const([2 * axis]), g.const([1])], out=f"{name}_box")
        g.node("Slice", ["extents", g.const([axis - 1]), g.const([axis]), g.const([1])], out=f"{name}_extent")
        g.weights(name)                                                                 # (N, size, L)
    g.node("Transpose", ["cols_w"], perm=[0, 2, 1], out="cols_wt")                     # (N, W, size)
    g.node("Unsqueeze", ["cols_wt", g.const([1])], out="cols_wt4")                     # (N, 1, W, size)
    g.node("MatMul", ["nchw", "cols_wt4"], out="across")                               # (N, 3, H, size)
    g.node("Clip", ["across", g.const(0.0, np.float32), g.const(255.0, np.float32)], out="across_clipped")
    g.node("Unsqueeze", ["rows_w", g.const([1])], out="rows_w4")                       # (N, 1, size, H)
    g.node("MatMul", ["rows_w4", "across_clipped"], out="down")                        # (N, 3, size, size)
    g.levels("down", "down_levels")
    g.node("Transpose", ["down_levels"], perm=[0, 2, 3, 1], out="nhwc")
    g.node("Cast", ["nhwc"], to=TensorProto.UINT8, out="pixels")
    inputs = [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", "height", "width", 3]),
              helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4]),
              helper.make_tensor_value_info("extents", TensorProto.FLOAT, ["n", 2])]
    out = helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", p.size, p.size, 3])
    inits = [numpy_helper.from_array(v, k) for k, v in g.consts.items()]
    graph = helper.make_graph(g.nodes, "featstore_crop_resize_chunk", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


class _Graph:
    """Nodes and constants of the resize graph, with the weight construction of one axis."""

    def __init__(self, p: Preprocess):
        self.p, self.nodes, self.consts = p, [], {}

    def const(self, value, dtype=np.int64) -> str:
        arr = np.asarray(value, dtype)
        name = f"c{len(self.consts)}"
        self.consts[name] = arr
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def levels(self, x: str, out: str) -> None:
        """Round to whole levels and clip to 0..255."""
        self.node("Round", [x], out=f"{x}_round")
        self.node("Clip", [f"{x}_round", self.const(0.0, np.float32), self.const(255.0, np.float32)], out=out)

    def weights(self, name: str) -> None:
        """`{name}_w` (N, size, L): Pillow's weight of source pixel x (0 <= x < L, the padded length) for output
        pixel i, for the box (`{name}_box`: start, length) of an image `{name}_extent` pixels long."""
        from onnx import TensorProto

        p, f32 = self.p, np.float32
        n = lambda op, ins, out, **kw: self.node(op, ins, out=f"{name}_{out}", **kw)     # noqa: E731
        v = lambda suffix: f"{name}_{suffix}"                                            # noqa: E731
        n("Squeeze", [f"{name}_len", self.const([0])], "len0")
        n("Cast", [v("len0")], "lenf", to=TensorProto.FLOAT)
        n("Range", [self.const(0.0, f32), v("lenf"), self.const(1.0, f32)], "x")         # (L,)
        n("Slice", [v("box"), self.const([0]), self.const([1]), self.const([1])], "start")    # (N, 1)
        n("Slice", [v("box"), self.const([1]), self.const([2]), self.const([1])], "length")
        n("Div", [v("length"), self.const(float(p.size), f32)], "step")                 # source pixels per output
        i = self.const((np.arange(p.size) + 0.5)[None, :], f32)                           # (1, size)
        n("Mul", [i, v("step")], "offset")
        n("Add", [v("start"), v("offset")], "centre")                                   # (N, size)
        n("Unsqueeze", [v("centre"), self.const([2])], "c3")                            # (N, size, 1)
        if p.interpolation == "nearest":        # Pillow's affine nearest: the pixel under the sample position
            n("Floor", [v("c3")], "fl")
            n("Sub", [v("extent"), self.const(1.0, f32)], "last")
            n("Unsqueeze", [v("last"), self.const([2])], "last3")
            n("Min", [v("fl"), v("last3")], "pick")
            n("Equal", [v("x"), v("pick")], "hit")
            n("Cast", [v("hit")], "w", to=TensorProto.FLOAT)
            return
        n("Max", [v("step"), self.const(1.0, f32)], "scale")                            # (N, 1): stretch if down
        n("Unsqueeze", [v("scale"), self.const([2])], "scale3")
        n("Mul", [v("scale3"), self.const(SUPPORT[p.interpolation], f32)], "support")
        # taps: floor(centre -/+ support + 0.5), clipped to the image (Pillow's xmin, xmax)
        n("Sub", [v("c3"), v("support")], "lo0")
        n("Add", [v("lo0"), self.const(0.5, f32)], "lo1")
        n("Floor", [v("lo1")], "lo")
        n("Add", [v("c3"), v("support")], "hi0")
        n("Add", [v("hi0"), self.const(0.5, f32)], "hi1")
        n("Floor", [v("hi1")], "hi2")
        n("Unsqueeze", [v("extent"), self.const([2])], "extent3")
        n("Min", [v("hi2"), v("extent3")], "hi")
        n("GreaterOrEqual", [v("x"), v("lo")], "above")
        n("Less", [v("x"), v("hi")], "below")
        n("And", [v("above"), v("below")], "inside")
        # the filter at (x - centre + 0.5) / scale
        n("Sub", [v("x"), v("c3")], "d0")
        n("Add", [v("d0"), self.const(0.5, f32)], "d1")
        n("Div", [v("d1"), v("scale3")], "d2")
        n("Abs", [v("d2")], "t")
        if p.interpolation == "bilinear":
            n("Sub", [self.const(1.0, f32), v("t")], "tri")
            n("Relu", [v("tri")], "k")
        else:                                   # bicubic, a = -0.5: two polynomials, zero from |t| = 2
            a = -0.5
            n("Mul", [v("t"), self.const(a + 2, f32)], "p1a")
            n("Sub", [v("p1a"), self.const(a + 3, f32)], "p1b")
            n("Mul", [v("p1b"), v("t")], "p1c")
            n("Mul", [v("p1c"), v("t")], "p1d")
            n("Add", [v("p1d"), self.const(1.0, f32)], "near")                          # |t| < 1
            n("Mul", [v("t"), self.const(a, f32)], "p2a")
            n("Sub", [v("p2a"), self.const(5 * a, f32)], "p2b")
            n("Mul", [v("p2b"), v("t")], "p2c")
            n("Add", [v("p2c"), self.const(8 * a, f32)], "p2d")
            n("Mul", [v("p2d"), v("t")], "p2e")
            n("Sub", [v("p2e"), self.const(4 * a, f32)], "far")                         # 1 <= |t| < 2
            n("Less", [v("t"), self.const(1.0, f32)], "is_near")
            n("Less", [v("t"), self.const(2.0, f32)], "is_in")
            n("Where", [v("is_in"), v("far"), self.const(0.0, f32)], "far_or_0")
            n("Where", [v("is_near"), v("near"), v("far_or_0")], "k")
        n("Where", [v("inside"), v("k"), self.const(0.0, f32)], "raw")
        n("ReduceSum", [v("raw"), self.const([2])], "sum", keepdims=1)
        n("Equal", [v("sum"), self.const(0.0, f32)], "zero")
        n("Where", [v("zero"), self.const(1.0, f32), v("sum")], "norm")
        n("Div", [v("raw"), v("norm")], "w")


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


def geometry(width: int, height: int, p: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """One image's rows of the graph's `boxes` and `extents` inputs."""
    (row_start, row_len), (col_start, col_len) = source_boxes(width, height, p)
    return (np.array([row_start, row_len, col_start, col_len], np.float32),
            np.array([height, width], np.float32))
