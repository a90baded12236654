"""The fused graph of a fine-tuned head: the backbone's frozen layers below the cut (models/cuts.py
bottom_graph), the tuned top stored with the head (heads/finetune_graph.py), then the head's remaining steps
(linear layer, softmax), which apps/fuse.py appends as for every head."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError
from featstore.heads.program import Program


def finetune_graph(program: Program, record: dict, log=lambda _m: None):
    """(ONNX model: the backbone's inputs -> tuned pooled features, the Program of the remaining steps,
    reference(feeds) -> what featstore computes in two steps: bottom graph, then the stored head)."""
    import onnx

    from featstore.heads.finetune_graph import flatten, step_model
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph, bottom_path
    from featstore.models.session import open_session

    if not program.steps or program.steps[0].op != "onnx":
        raise FeatstoreError(f"head {record['name']!r} is not a fine-tuned head")
    model, cut = record["params"].get("model"), record["params"].get("cut")
    path = bottom_path(resolve(model), cut)      # exported when the activations were stored: no torch needed
    if not path.is_file():
        path = bottom_graph(model, cut, log=log)
    bottom = onnx.load(str(path))
    top = onnx.compose.add_prefix(step_model(program.steps[0]), "top/")
    if top.ir_version != bottom.ir_version:
        top.ir_version = bottom.ir_version
    has_mask = bool(program.steps[0].attrs.get("mask"))
    io_map = [("activation", "top/activation")] + ([("mask", "top/mask")] if has_mask else [])
    merged = onnx.compose.merge_models(bottom, top, io_map=io_map, outputs=["top/features"])
    rest = Program(program.steps[1:], program.outputs, program.task_type)
    session = open_session(path, "cpu")

    def reference(feeds: dict) -> np.ndarray:
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))
        act, mask = got["activation"], got.get("mask") if has_mask else None
        if has_mask:                       # stored heads read rows padded to the set's token limit
            pad = int(program.steps[0].attrs["input_shape"][0]) - act.shape[1]
            act = np.pad(act, ((0, 0), (0, pad), (0, 0)))
            mask = np.pad(mask, ((0, 0), (0, pad)))
        return program.run(flatten(act, mask))

    return merged, rest, reference
