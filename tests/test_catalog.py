import json
import re

import pytest

from featstore.models.catalog import builtin_models, default_model, resolve
from featstore.errors import FeatstoreError


def test_catalogue_lists_the_four_backbones():
    models = builtin_models()
    assert set(models) == {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "all-minilm-l6-v2"}
    assert default_model().name == "efficientnet-lite0"
    sizes = {n: models[n].preprocess.size for n in models if models[n].modality == "image"}
    assert sizes == {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
    for name in sizes:
        p = models[name].preprocess
        assert p.mean == (127.0,) * 3 and p.std == (128.0,) * 3
        assert models[name].dim == 1280
    assert models["all-minilm-l6-v2"].modality == "text" and models["all-minilm-l6-v2"].dim == 384


def test_unknown_model_lists_the_known_ones():
    try:
        resolve("resnet50")
    except FeatstoreError as exc:
        assert "resnet50" in str(exc) and "efficientnet-lite0" in str(exc)
    else:
        raise AssertionError("unknown model accepted")


def test_models_list_cli(run):
    out = run("models", "list", "--json").stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["efficientnet-lite0"]["exported"] is True        # the session fixture exported it
    assert rows["efficientnet-lite0"]["dim"] == 1280
    assert rows["all-minilm-l6-v2"]["modality"] == "text"
    human = run("models", "list").output
    assert "efficientnet-lite2" in human and "Apache-2.0" in human


def test_name_at_size_is_the_same_backbone_at_another_input_size():
    base = resolve("efficientnet-lite0")
    big = resolve("efficientnet-lite0@320")
    assert big.name == "efficientnet-lite0@320" and big.preprocess.size == 320 and not big.default
    assert big.source == base.source and big.output == base.output and big.dim == base.dim
    assert big.preprocess.crop_fraction == base.preprocess.crop_fraction          # only the size changes
    assert big.spec_hash() != base.spec_hash()                                     # its own export
    assert resolve("efficientnet-lite0@224") == base                               # its own size: the entry itself
    assert resolve("efficientnet-lite2@260") == resolve("efficientnet-lite2")


@pytest.mark.parametrize("name, says", [
    ("efficientnet-lite0@big", "after '@' comes the input size"),
    ("efficientnet-lite0@8", "outside 32..1024"),
    ("all-minilm-l6-v2@320", "only a catalogue image backbone"),
    ("resnet50@224", "efficientnet-lite0"),                                        # unknown: lists the known ones
])
def test_bad_size_variants_are_one_clear_error(name, says):
    with pytest.raises(FeatstoreError, match=re.escape(says)):
        resolve(name)
