"""A head's Program emitted as ONNX nodes (opset 17), step for step the same as Program.run."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .program import KNN_EPS, Program


class _Builder:
    def __init__(self, graph: onnx.GraphProto, prefix: str):
        self.graph, self.prefix, self.n = graph, prefix, 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{self.prefix}/{hint}_{self.n}"

    def const(self, array: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(hint) for _ in range(n_out)]
        self.graph.node.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs


def append_program(graph: onnx.GraphProto, program: Program, x: str, prefix: str = "head") -> str:
    """Add the program's nodes after tensor `x` (float, batch x features); returns the output tensor name."""
    b = _Builder(graph, prefix)
    for step in program.steps:
        a = step.arrays
        if step.op == "standardise":
            x = b.node("Sub", [x, b.const(a["mean"], "mean")], "centred")[0]
            x = b.node("Div", [x, b.const(a["scale"], "scale")], "standardised")[0]
        elif step.op == "l2norm":
            norm = b.node("ReduceL2", [x], "norm", axes=[1], keepdims=1)[0]
            norm = b.node("Max", [norm, b.const(np.array(1e-12, np.float32), "eps")], "norm_safe")[0]
            x = b.node("Div", [x, norm], "unit")[0]
        elif step.op == "dense":
            x = b.node("MatMul", [x, b.const(a["weight"], "weight")], "matmul")[0]
            x = b.node("Add", [x, b.const(a["bias"], "bias")], "dense")[0]
        elif step.op == "relu":
            x = b.node("Relu", [x], "relu")[0]
        elif step.op == "softmax":
            x = b.node("Softmax", [x], "probabilities", axis=-1)[0]
        elif step.op == "knn":
            sims = b.node("MatMul", [x, b.const(np.ascontiguousarray(a["refs"].T), "refs_t")], "sims")[0]
            values, idx = b.node("TopK", [sims, b.const(np.array([step.attrs["k"]], np.int64), "k")], "topk",
                                 n_out=2, axis=-1, largest=1, sorted=1)
            w = b.node("Relu", [values], "w_pos")[0]
            w = b.node("Add", [w, b.const(np.array(KNN_EPS, np.float32), "w_eps")], "w")[0]
            onehot = b.node("Gather", [b.const(a["onehot"], "onehot"), idx], "neighbour_labels", axis=0)[0]
            w3 = b.node("Unsqueeze", [w, b.const(np.array([2], np.int64), "axis2")], "w3")[0]
            votes = b.node("Mul", [onehot, w3], "weighted")[0]
            axis1 = b.const(np.array([1], np.int64), "axis1")
            votes = b.node("ReduceSum", [votes, axis1], "votes", keepdims=0)[0]
            total = b.node("ReduceSum", [w, axis1], "total", keepdims=1)[0]
            x = b.node("Div", [votes, total], "vote_share")[0]
        else:
            raise ValueError(f"no ONNX form for step {step.op!r}")
    return x
