"""Export: catalogue backbone -> ONNX file, once, checked against torch on real photos, cached in the home."""
from __future__ import annotations

import hashlib
import json
import warnings
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from featstore.models.catalog import ModelSpec, Preprocess, spec_file
from featstore.errors import FeatstoreError
from featstore.hashing import file_sha256
from featstore.home import exports_dir
from featstore.models.images import decode_image
from featstore.models.preprocess import crop_resize, draft_target, normalise
from featstore.models.session import run_once

EXPORT_FORMAT = 1          # bump when the export code changes what a file contains
OPSET = 17
PARITY_TOLERANCE = 1e-4    # max abs difference ONNX Runtime vs torch on real photos ...
PARITY_COSINE = 0.99999    # ... or, for outputs of large magnitude, the least cosine; else the export is refused


def parity_photos() -> list[Path]:
    """Real photos shipped with featstore (CC BY 2.0, credits beside them) for export checks."""
    folder = resources.files("featstore.data") / "parity"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".jpg"))


def parity_sentences() -> list[str]:
    """Real sentences shipped with featstore for text export checks (one per line; one longer than the limit)."""
    text = (resources.files("featstore.data") / "parity_text.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def export_key(spec: ModelSpec) -> str:
    """Hash of weights + spec + export format: names the cached ONNX file."""
    files = spec.source.get("weights_files") or [spec.source["weights_file"]]     # an imported model: every shard
    weights = [file_sha256(spec_file(spec, f)) for f in files]
    blob = json.dumps({"weights": weights[0] if len(weights) == 1 else weights, "spec": spec.spec_hash(),
                       "format": EXPORT_FORMAT})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_path(spec: ModelSpec) -> Path:
    return exports_dir() / f"{spec.name}-{export_key(spec)}.onnx"


def is_exported(spec: ModelSpec) -> bool:
    if spec.onnx_path:
        return Path(spec.onnx_path).is_file()
    return cached_path(spec).is_file()


def ensure_exported(spec: ModelSpec, log=print) -> Path:
    """The ONNX file for a backbone, exporting (and checking) it on first use."""
    if spec.onnx_path:
        return Path(spec.onnx_path)
    target = cached_path(spec)
    if target.is_file():
        return target
    log(f"exporting {spec.name} to ONNX (once; cached in {target.parent}) ...")
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    try:
        diff, what = _export_and_check(spec, Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log(f"exported {spec.name}: max |onnx - torch| = {diff[0]:.2e}, least cosine {diff[1]:.7f} on {what}")
    return target


def _parity_inputs(spec: ModelSpec):
    """(torch module, its real parity inputs by ONNX input name, their dynamic axes, what they are)."""
    if spec.modality == "image":
        from featstore.models.torch_backbones import load_features

        return (load_features(spec), {"image": photo_batch(spec.preprocess)}, {"image": {0: "batch"}},
                f"{len(parity_photos())} real photos")
    from featstore.models.tokenize import TEXT_INPUTS, TextTokenizer
    from featstore.models.torch_backbones import load_text_features

    feeds = TextTokenizer(spec).encode(parity_sentences()).feeds
    return (load_text_features(spec), feeds, {k: {0: "batch", 1: "tokens"} for k in TEXT_INPUTS},
            f"{len(parity_sentences())} real texts")


def _export_and_check(spec: ModelSpec, out: Path) -> tuple[tuple[float, float], str]:
    """torch.onnx.export with dynamic axes (batch; tokens for text), then the parity check on real inputs
    (photos or sentences); returns (max abs difference, least cosine) and what they were measured on."""
    import torch  # export time only

    model, feeds, axes, what = _parity_inputs(spec)
    names = list(axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(feeds[k][:2]) for k in names), str(out),
                          input_names=names, output_names=["features"],
                          dynamic_axes={**axes, "features": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        with torch.no_grad():
            expected = model(*[torch.from_numpy(feeds[k]) for k in names]).numpy()
    got = run_once(out, {k: feeds[k] for k in names})
    diff, cosine = parity(got, expected)
    if not (diff <= PARITY_TOLERANCE or cosine >= PARITY_COSINE):
        raise FeatstoreError(f"export of {spec.name} refused: ONNX Runtime differs from torch by {diff:.2e} "
                             f"(> {PARITY_TOLERANCE:g}) with least cosine {cosine:.7f} (< {PARITY_COSINE}) on {what}")
    return (diff, cosine), what


def parity(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs difference, least row cosine) of two batches of vectors; NaN anywhere fails both."""
    got, expected = got.reshape(len(got), -1).astype(np.float64), expected.reshape(len(expected), -1)
    diff = float(np.abs(got - expected).max())
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = float(((got * expected).sum(axis=1) / np.maximum(norms, 1e-30)).min())
    if not (np.isfinite(diff) and np.isfinite(cosine)):
        return float("inf"), -1.0
    return diff, cosine


def photo_batch(p: Preprocess) -> np.ndarray:
    """The parity photos preprocessed exactly as embedding does: NCHW float32."""
    arrays = [crop_resize(decode_image(f.read_bytes(), draft_target(p)), p) for f in parity_photos()]
    return normalise(np.stack(arrays), p)
