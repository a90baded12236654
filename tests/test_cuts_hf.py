"""Cut activations of transformers, offline: tiny random-initialised ViT, DINOv2, CLIP and SigLIP (image towers)
and BERT imported from folders built in the test (tests/hf_tiny.py), and the catalogue's all-MiniLM-L6-v2 on real
BBC News texts.
The layers above `last-block` / `last-2-blocks` reproduce the pooled output (CLS, projection, masked mean +
normalisation) from the activation. Every socket is blocked for the whole module."""
import json

import numpy as np
import pytest

import hf_tiny
from conftest import SAMPLE, cli_runner, network_blocked, private_homes

FP32_BOUND = 1e-4
FP16_BOUND = 1e-3        # MiniLM after fp16 storage (measured 3e-5 on unit-norm vectors); tiny models: 1e-3 too


@pytest.fixture(scope="module", autouse=True)
def no_network():
    with network_blocked():
        yield


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    with private_homes(tmp_path_factory.mktemp("cut-hf-home")):
        yield cli_runner()


@pytest.fixture(scope="module")
def imported(cli, tmp_path_factory):
    """tiny ViT, DINOv2, CLIP, SigLIP (image towers) and BERT (mean-pooled) imported: {kind: the entry's name}."""
    root = tmp_path_factory.mktemp("cut-hf-models")
    out = {}
    for kind in ("vit", "dinov2", "clip", "siglip", "bert"):
        folder = hf_tiny.build(kind, root / f"tiny-{kind}")
        rows = json.loads(cli("models", "add", folder, "--name", f"cut-{kind}", "--json").stdout)
        out[kind] = next(r["name"] for r in rows if r["modality"] == ("text" if kind == "bert" else "image"))
    return out


def _top(model, cut, x, mask=None):
    import torch

    from featstore.models.cuts import top_module

    with torch.no_grad():
        m = None if mask is None else torch.from_numpy(np.asarray(mask, np.int64))
        return top_module(model, cut)(torch.from_numpy(np.asarray(x, np.float32)), m).numpy()


TOKENS = {"vit": 17, "dinov2": 5, "clip": 17, "siglip": 16}      # patches (+ a class token, not in SigLIP)


@pytest.mark.parametrize("kind", ["vit", "dinov2", "clip", "siglip"])
def test_tiny_vision_top_reproduces_pooled(imported, kind):
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph, cut_points, cut_shape
    from featstore.models.export import ensure_exported, photo_batch
    from featstore.models.session import run_once

    name = imported[kind]
    spec = resolve(name)
    assert [c.name for c in cut_points(name)] == ["last-block", "last-2-blocks"]
    x = photo_batch(spec.preprocess)
    pooled = run_once(ensure_exported(spec), x)
    for cut in ("last-block", "last-2-blocks"):
        shape = cut_shape(name, cut)
        assert shape == (TOKENS[kind], 32)
        act = run_once(bottom_graph(name, cut), x).reshape((len(x),) + shape)
        assert np.abs(_top(name, cut, act) - pooled).max() <= FP32_BOUND
    a1 = run_once(bottom_graph(name, "last-block"), x)
    a2 = run_once(bottom_graph(name, "last-2-blocks"), x)
    assert np.abs(a1 - a2).max() > 1e-3                   # two different cuts


def test_tiny_vit_embed_cut_views(imported, cli, tmp_path):
    from featstore.store.activations import find_activation_set, read_activations
    from featstore.store.db import Store

    name = imported["vit"]
    store = tmp_path / "store"
    out = json.loads(cli("embed", SAMPLE, "--model", name, "--store", store, "--cut", "last-2-blocks", "--views", 2,
                         "--json").stdout)
    assert out["cut"]["embedded"] == 100 and out["cut"]["shape"] == [17, 32]
    with Store.open(store) as st:
        (s,) = st.sets()
        pooled = dict(st.con.execute(f"SELECT hash, vector FROM {s.table}").fetchall())
        a = find_activation_set(st, name, "last-2-blocks")
        hashes = sorted(pooled)
        got = read_activations(st, a, hashes)
    assert got["x"].shape == (100, 2, 17, 32) and got["x"].dtype == np.float16
    expected = np.asarray([pooled[h] for h in hashes], np.float32)
    assert np.abs(_top(name, "last-2-blocks", got["x"][:, 0]) - expected).max() <= FP16_BOUND
    assert np.abs(got["x"][:, 1].astype(np.float32) - got["x"][:, 0]).max() > 0.1


def test_unsupported_model_has_no_cut_points(cli, tmp_path):
    folder = hf_tiny.build("convnext", tmp_path / "tiny-convnext")
    cli("models", "add", folder, "--name", "cut-convnext", "--json")
    r = cli("models", "cuts", "cut-convnext", ok=False)
    assert r.exit_code != 0 and "has no cut points" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("embed", SAMPLE, "--model", "cut-convnext", "--store", tmp_path / "s", "--cut", "last-block", ok=False)
    assert r.exit_code != 0 and "has no cut points" in r.output and not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def bbc_small(tmp_path_factory):
    """2 BBC News articles per class (10 texts) as a labelled folder."""
    from test_text import bbc_labelled_folder

    folder = bbc_labelled_folder(tmp_path_factory.mktemp("bbc-cut") / "bbc", 2)
    (folder / "business" / "short.txt").write_text("Shares rose.", encoding="utf-8")
    return folder


def test_minilm_last_block_on_bbc(cli, bbc_small, tmp_path):
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph
    from featstore.models.session import open_session
    from featstore.models.tokenize import TextTokenizer
    from featstore.store.activations import find_activation_set, read_activations
    from featstore.store.db import Store

    model = "all-minilm-l6-v2"
    store = tmp_path / "store"
    out = json.loads(cli("embed", bbc_small, "--store", store, "--cut", "last-block", "--json").stdout)
    assert out["unit"] == "text" and out["cut"]["embedded"] == 11 and out["cut"]["shape"] == [256, 384]
    with Store.open(store) as st:
        (s,) = st.sets()
        pooled = dict(st.con.execute(f"SELECT hash, vector FROM {s.table}").fetchall())
        texts = dict(st.con.execute("SELECT hash, text FROM texts").fetchall())
        a = find_activation_set(st, model, "last-block")
        hashes = sorted(pooled)
        got = read_activations(st, a, hashes)
    x, mask = got["x"], got["mask"]
    assert x.shape == (11, 1, 256, 384) and x.dtype == np.float16 and mask.dtype == np.uint8
    lengths = mask.sum(axis=1)
    assert lengths.min() < 10 and lengths.max() == 256                   # the short text and a truncated article
    assert not x[:, 0][mask == 0].any()                                      # padding is zeros
    expected = np.asarray([pooled[h] for h in hashes], np.float32)
    assert np.abs(_top(model, "last-block", x[:, 0], mask) - expected).max() <= FP16_BOUND
    # fp32, straight from the bottom graph (activation and mask out), before any storage
    enc = TextTokenizer(resolve(model)).encode([texts[h] for h in hashes])
    session = open_session(bottom_graph(model, "last-block"), "cpu", 2)
    act, passed = session.run(None, {i.name: enc.feeds[i.name] for i in session.get_inputs()})
    assert np.array_equal(passed, enc.feeds["attention_mask"])
    assert np.abs(_top(model, "last-block", act, passed) - expected).max() <= FP32_BOUND
    again = json.loads(cli("embed", bbc_small, "--store", store, "--cut", "last-block", "--json").stdout)["cut"]
    assert again["embedded"] == 0 and again["already"] == 11
    r = cli("embed", bbc_small, "--store", store, "--cut", "last-block", "--views", 2, ok=False)
    assert r.exit_code != 0 and "texts have one view" in r.output


def test_minilm_last_2_blocks_top(cli):
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph
    from featstore.models.export import ensure_exported, parity_sentences
    from featstore.models.session import open_session, run_once
    from featstore.models.tokenize import TextTokenizer

    spec = resolve("all-minilm-l6-v2")
    enc = TextTokenizer(spec).encode(parity_sentences())
    pooled = run_once(ensure_exported(spec, log=lambda *_: None), enc.feeds)
    session = open_session(bottom_graph(spec, "last-2-blocks"), "cpu", 2)
    act, mask = session.run(None, {i.name: enc.feeds[i.name] for i in session.get_inputs()})
    assert np.abs(_top(spec.name, "last-2-blocks", act, mask) - pooled).max() <= FP32_BOUND


def test_remove_model_removes_its_cut_exports(imported, cli):
    from featstore.home import exports_dir

    name = imported["vit"]
    cut_files = [p for p in exports_dir().iterdir() if p.name.startswith(f"{name}-") and "-cut" in p.name]
    assert {p.suffix for p in cut_files} == {".onnx", ".json"} and len(cut_files) == 4
    out = json.loads(cli("models", "remove", name, "--json").stdout)
    assert {str(p) for p in cut_files} <= set(out["files"])
    assert not any(p.exists() for p in cut_files)


def test_tiny_bert_top_with_mask(imported):
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph, cut_shape
    from featstore.models.export import ensure_exported, parity_sentences
    from featstore.models.session import open_session, run_once
    from featstore.models.tokenize import TextTokenizer

    spec = resolve(imported["bert"])
    enc = TextTokenizer(spec).encode(parity_sentences())
    pooled = run_once(ensure_exported(spec), enc.feeds)
    for cut in ("last-block", "last-2-blocks"):
        assert cut_shape(spec, cut) == (spec.input["max_tokens"], 32)
        session = open_session(bottom_graph(spec, cut), "cpu", 2)
        act, mask = session.run(None, {i.name: enc.feeds[i.name] for i in session.get_inputs()})
        assert np.abs(_top(spec.name, cut, act, mask) - pooled).max() <= FP32_BOUND
        assert np.abs(_top(spec.name, cut, act) - pooled).max() > 1e-3       # the mask matters
