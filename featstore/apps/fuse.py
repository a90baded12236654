"""One-file deployment: a stored head fused onto its backbone as one ONNX model (image or tokens in, answer out).

The fused model is checked at export against the two-step path featstore itself uses (backbone session, then
the head's Program in numpy) on real photos, and refused above FUSE_TOLERANCE. Its metadata carries the class
names and the exact preprocessing (a text model: its tokenizer.json too), which `featstore.preprocess`
(models/deploy.py) turns into the model's inputs with numpy and Pillow (texts: tokenizers) only; the check runs the
fused model on the inputs that helper makes from the file's own metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featstore.errors import FeatstoreError
from featstore.models.deploy import preprocess
from featstore.models.export import parity_photos, parity_sentences, photo_batch
from featstore.heads.storage import load_head
from featstore.embed.backbones import backbone_for_set
from featstore.store.db import Store

FUSE_TOLERANCE = 1e-4


def export_fused(store: Store, head_name: str, output: str | Path) -> dict:
    import onnx

    from featstore import runtimes
    ort = runtimes.onnxruntime()

    from featstore.heads.onnx_ops import append_program

    program, record = load_head(store, head_name)
    s = store.get_set(record["set_id"])
    if s is None:
        raise FeatstoreError(f"head {head_name!r} was fitted on embedding set {record['set_id']}, "
                             "which is no longer in this store")
    backbone, pre = backbone_for_set(s, device="cpu")
    if record["kind"] == "finetune":     # frozen layers below the cut + the tuned top (fuse_finetune.py)
        from featstore.apps.fuse_finetune import finetune_graph

        model, program, reference = finetune_graph(program, record)
    else:
        model = onnx.load(str(backbone.onnx_path))
        reference = lambda feeds: program.run(backbone.run_feeds(feeds))    # noqa: E731
    graph = model.graph
    features = graph.output[0].name
    out = append_program(graph, program, features)
    out_name = "probabilities" if program.task_type == "classification" else "prediction"
    graph.node.append(onnx.helper.make_node("Identity", [out], [out_name], name="head/output"))
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT,
                                                           ["batch", len(program.outputs)]))
    graph.name = f"featstore-{head_name}"
    if s.modality == "text":
        p = dict(s.preprocess)
        text = (f"token ids, attention mask and token type ids (int64, batch x tokens) from the model's "
                f"tokenizer.json (in this file's metadata, featstore.tokenizer), truncated at {p['max_tokens']} "
                "tokens")
    else:
        p = pre.as_dict()
        text = pre.describe() + "; NCHW float32"
    meta = {"featstore.head": head_name, "featstore.kind": record["kind"], "featstore.task": record["task"],
            "featstore.backbone": s.model, "featstore.embedding_set": s.set_id,
            "featstore.outputs": json.dumps(program.outputs), "featstore.task_type": program.task_type,
            "featstore.modality": s.modality, "featstore.inputs": json.dumps([i.name for i in graph.input]),
            "featstore.preprocess": json.dumps(p), "featstore.preprocess_text": text}
    if s.modality == "text":
        meta["featstore.tokenizer"] = _tokenizer_json(s)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)

    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        onnx.save(model, str(tmp))
        if s.modality == "text":
            feeds, samples = pre.encode(parity_sentences()).feeds, parity_sentences()
            checked_on = f"{len(parity_sentences())} real texts"
        else:
            feeds, samples = {graph.input[0].name: photo_batch(pre)}, [str(f) for f in parity_photos()]
            checked_on = f"{len(parity_photos())} real photos"
        expected = reference(feeds)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run([out_name], preprocess(session, samples))[0]
        diff = float(np.abs(got - expected).max())
        if not np.isfinite(diff) or diff > FUSE_TOLERANCE:
            raise FeatstoreError(f"fused export of head {head_name!r} refused: it differs from backbone + head by "
                                 f"{diff:.2e} (> {FUSE_TOLERANCE:g}) on real photos")
        os.replace(tmp, output)
    except OSError as exc:
        raise FeatstoreError(f"{output}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(output), "bytes": output.stat().st_size, "head": head_name,
            "input": ", ".join(i.name for i in graph.input),
            "input_shape": ["batch", 3, p["size"], p["size"]] if s.modality == "image" else ["batch", "tokens"],
            "output": out_name, "outputs": program.outputs,
            "task_type": program.task_type, "checked_on": checked_on, "max_abs_diff": diff,
            "preprocess": p, "preprocess_text": text}


def _tokenizer_json(s) -> str:
    """The text of the tokenizer.json that embedded text set `s` (checked against the hash the set records)."""
    from featstore.hashing import file_sha256
    from featstore.models.catalog import catalogue_spec, spec_file

    spec = catalogue_spec(s.model)
    path = spec_file(spec, spec.input["tokenizer"]) if spec is not None else None
    if path is None or file_sha256(path) != s.preprocess.get("tokenizer_sha256"):
        raise FeatstoreError(f"the tokenizer that embedded set {s.set_id} (model {s.model}) is not the installed "
                             "one; re-embed with the current model")
    return path.read_text(encoding="utf-8")
