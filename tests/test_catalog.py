import json

from featstore.catalog import builtin_models, default_model, resolve
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
