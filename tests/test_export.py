"""The ONNX export is checked against torch on real photos; real ImageNet weights and preprocessing are proven."""
import numpy as np
import pytest
import torch

from featstore.models import export
from featstore.embed.run import Backbone
from featstore.models.catalog import resolve
from featstore.models.images import decode_image
from featstore.errors import FeatstoreError
from featstore.models.preprocess import crop_resize, draft_target, normalise
from featstore.models.torch_backbones import load_classifier, load_features


def test_onnx_matches_torch_on_real_photos(home):
    spec = resolve("efficientnet-lite0")
    path = export.ensure_exported(spec)
    batch = export.photo_batch(spec.preprocess)
    assert batch.shape == (5, 3, 224, 224)
    with torch.no_grad():
        expected = load_features(spec)(torch.from_numpy(batch)).numpy()
    got = Backbone(path, device="cpu").run(batch)
    assert got.shape == (5, 1280)
    assert np.abs(got - expected).max() <= 1e-4
    # dynamic batch axis: one image alone gives the same vector as inside a batch
    single = Backbone(path, device="cpu").run(batch[2:3])
    assert np.abs(single[0] - got[2]).max() <= 1e-4


def test_export_is_cached_and_keyed(home):
    spec = resolve("efficientnet-lite0")
    first = export.ensure_exported(spec)
    mtime = first.stat().st_mtime_ns
    assert export.ensure_exported(spec) == first and first.stat().st_mtime_ns == mtime
    assert first.parent == home / "exports" and export.export_key(spec) in first.name


def test_export_refused_when_onnx_disagrees_with_torch(home, monkeypatch, tmp_path):
    monkeypatch.setattr(export, "PARITY_TOLERANCE", 0.0)   # no real export is bit-exact: must refuse
    monkeypatch.setattr(export, "PARITY_COSINE", 1.5)      # (nor does the cosine rule let it through)
    monkeypatch.setattr(export, "exports_dir", lambda: tmp_path)
    with pytest.raises(FeatstoreError, match="refused"):
        export.ensure_exported(resolve("efficientnet-lite0"), log=lambda *_: None)
    assert not list(tmp_path.glob("*.onnx"))                  # nothing half-made is left to be used


def test_golden_chelsea_is_a_cat():
    """ImageNet logits of the default backbone put scikit-image's chelsea photo in a cat class (281-285)."""
    import io

    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="PNG")
    spec = resolve("efficientnet-lite0")
    p = spec.preprocess
    x = normalise(crop_resize(decode_image(buf.getvalue(), draft_target(p)), p)[None], p)
    with torch.no_grad():
        logits = load_classifier(spec)(torch.from_numpy(x))[0]
    top = int(logits.argmax())
    assert 281 <= top <= 285, f"chelsea classified as ImageNet class {top}"
    assert float(torch.softmax(logits, 0)[281:286].sum()) > 0.5


def test_backbone_at_another_size_is_built_for_that_size():
    """The package pads convolutions "same" for one input size fixed when the module is built. Lite2's native 260
    gives odd feature maps (65) where 320 gives even ones, so pads built for 260 are wrong at 320: NAME@SIZE must
    build the module for its size, matching the package's size-agnostic (dynamic) padding exactly."""
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    from featstore.models.catalog import weights_path

    spec = resolve("efficientnet-lite2@320")
    x = torch.from_numpy(export.photo_batch(spec.preprocess)[:2])
    assert x.shape[-1] == 320
    with contextlib.redirect_stdout(io.StringIO()):
        dynamic = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=str(weights_path(spec)),
                                               image_size=None).eval()
    with torch.no_grad():
        reference = dynamic._avg_pooling(dynamic.extract_features(x)).flatten(1)
        ours = load_features(spec)(x)
        native = load_features(resolve("efficientnet-lite2"))(x)            # built for 260, run at 320
    assert torch.abs(ours - reference).max() <= 1e-5
    assert torch.abs(native - reference).max() > 1e-2                        # what the size-specific build avoids
