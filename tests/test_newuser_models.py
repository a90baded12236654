"""`featstore models add` / `models remove` as a new user meets them, offline: a CLIP folder saved the way the
installed transformers saves a processor, unsupported models refused in one line naming what is supported, a
missing processor said before torch is imported, names not silently replaced, imported models removed, and
zero-shot heads picking their set by the rule `search --text` follows. Tiny random-initialised models
(tests/hf_tiny.py) are exported to ONNX and run by ONNX Runtime; every socket is blocked for the whole module."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hf_tiny
from conftest import SAMPLE, cli_runner, network_blocked, private_homes, sample_images


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Any connection attempt raises: nothing in this module may reach the hub (or anything else)."""
    with network_blocked():
        yield


@pytest.fixture(scope="module")
def my_home(home, tmp_path_factory):
    """A featstore home of this module's own (its imported entries stay out of the other tests' catalogue), with
    the session's exported default backbone copied in, and an empty Hugging Face cache."""
    path = tmp_path_factory.mktemp("newuser-home")
    (path / "featstore" / "exports").mkdir(parents=True)
    for f in (home / "exports").glob("efficientnet-lite0-*.onnx"):
        shutil.copy2(f, path / "featstore" / "exports" / f.name)
    with private_homes(path) as featstore_home:
        yield featstore_home


@pytest.fixture(scope="module")
def cli_run(my_home):
    return cli_runner()


def _error_line(result) -> str:
    """The one error line of a refused command (asserting it failed cleanly, without a traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    return lines[0]


def _save_model(model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(folder))
    return folder


# ---- a CLIP folder saved by the installed transformers ---------------------------------------------------------
def _clip_model():
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    return tf.CLIPModel(tf.CLIPConfig(
        text_config={"vocab_size": 30522, "max_position_embeddings": 77, "eos_token_id": 102, **small},
        vision_config={"image_size": 32, "patch_size": 8, **small}, projection_dim=16))


def test_clip_folder_saved_with_its_processor_imports(cli_run, tmp_path):
    """CLIPProcessor.save_pretrained and AutoProcessor.save_pretrained write the image processor where the installed
    transformers puts it (processor_config.json in 5.x); both folders import with the preprocessing an image
    processor saved on its own gives."""
    import transformers as tf
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = _clip_model()
    only = hf_tiny.build("clip", tmp_path / "image-processor-only")        # preprocessor_config.json
    tokenizer = tf.AutoTokenizer.from_pretrained(str(only))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            **hf_tiny.CLIP_NORM)
    joint = _save_model(model, tmp_path / "clip-processor")
    tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(joint))
    auto = _save_model(model, tmp_path / "auto-processor")
    tf.AutoProcessor.from_pretrained(str(joint)).save_pretrained(str(auto))
    rows = {}
    for folder in (only, joint, auto):
        if folder is not only:
            assert (folder / "processor_config.json").is_file()
            assert not (folder / "preprocessor_config.json").is_file()   # what the user's folder looked like
        out = json.loads(cli_run("models", "add", folder, "--json").stdout)
        assert [r["name"] for r in out] == [folder.name, f"{folder.name}-text"] and all(r["exported"] for r in out)
        rows[folder.name] = out[0]
    assert rows["clip-processor"]["preprocessing"] == rows["image-processor-only"]["preprocessing"]
    assert rows["auto-processor"]["preprocessing"] == rows["image-processor-only"]["preprocessing"]
    assert "shorter side resized (bicubic) to 32, centre crop 32 x 32" in rows["clip-processor"]["preprocessing"]


# ---- unsupported models ---------------------------------------------------------------------------------------
def _unsupported(kind: str, folder: Path) -> Path:
    """A tiny saved model featstore does not import (with the tokenizer or processor files a user would have)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "t5":
        model = tf.T5EncoderModel(tf.T5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=37, num_layers=2,
                                              num_heads=2))
    elif kind == "wav2vec2":
        model = tf.Wav2Vec2Model(tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=37, conv_dim=(8, 8), conv_stride=(5, 2),
                                                   conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                                   num_conv_pos_embedding_groups=2))
    elif kind == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    else:
        raise ValueError(kind)
    _save_model(model, folder)
    hf_tiny._copy_tokenizer(folder)
    return folder


@pytest.mark.parametrize("kind, args, why", [
    ("t5", [], "model type 't5' (T5EncoderModel) is not supported: it is an encoder-decoder"),
    ("wav2vec2", ["--modality", "text"], "model type 'wav2vec2' (Wav2Vec2Model) is not supported: it is a "
                                         "speech/audio model"),
    ("gpt2", [], "model type 'gpt2' (GPT2LMHeadModel) is not supported: it is a decoder (causal language model)"),
])
def test_unsupported_model_is_one_line_naming_what_is_supported(cli_run, tmp_path, kind, args, why):
    r = cli_run("models", "add", _unsupported(kind, tmp_path / f"tiny-{kind}"), *args, ok=False)
    line = _error_line(r)
    assert why in line
    assert "featstore imports image: " in line and "vit" in line and "text: " in line and "bert" in line
    assert "dual encoders: clip, siglip" in line
    assert kind not in json.dumps([r["name"] for r in json.loads(cli_run("models", "list", "--json").stdout)])


def test_unknown_model_type_and_a_wrong_modality_are_one_line(cli_run, tmp_path):
    folder = hf_tiny.build("vit", tmp_path / "tiny-vit")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "my-own-net",
                                                    "architectures": ["MyOwnNet"]}))
    line = _error_line(cli_run("models", "add", folder, ok=False))
    assert "model type 'my-own-net' (MyOwnNet) is not supported: featstore has not checked that it exports" in line
    assert "--modality" not in line and "featstore imports image: " in line
    (folder / "config.json").write_text(json.dumps(config))
    line = _error_line(cli_run("models", "add", folder, "--modality", "text", ok=False))
    assert "model type 'vit' is an image model; it cannot embed text" in line


def test_supported_model_types_are_listed_in_the_docs():
    from featstore.models.hf_support import DUAL, IMAGE_TYPES, TEXT_TYPES

    doc = (Path(__file__).parent.parent / "docs" / "backbones.md").read_text(encoding="utf-8")
    listed = doc[doc.index("the list of supported model types"):]
    for t in sorted(IMAGE_TYPES | TEXT_TYPES | DUAL):
        assert f"`{t}`" in listed, t


# ---- the folder checked before torch is imported ---------------------------------------------------------------
def _add_in_subprocess(folder: Path, home: Path) -> tuple[str, str]:
    """`featstore models add FOLDER` in a fresh interpreter: (its error line, HEAVY or LIGHT: whether torch or
    transformers was imported by the time it failed)."""
    code = ("import sys, click; from featstore.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "except click.ClickException as exc:\n    print('Error:', exc.message)\n"
            "finally:\n    print('HEAVY' if {'torch', 'transformers'} & set(sys.modules) else 'LIGHT')\n")
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    p = subprocess.run([sys.executable, "-c", code, "models", "add", str(folder)], env=env, capture_output=True,
                       text=True, timeout=120)
    lines = p.stdout.strip().splitlines()
    return next((x for x in lines if x.startswith("Error:")), p.stdout + p.stderr), lines[-1]


def test_missing_processor_or_tokenizer_is_said_before_torch_is_imported(my_home, tmp_path):
    import transformers as tf

    vit = hf_tiny.build("vit", tmp_path / "vit-without-processor")
    (vit / "preprocessor_config.json").unlink()
    line, weight = _add_in_subprocess(vit, my_home)
    assert weight == "LIGHT", line
    assert "no image processor settings (neither preprocessor_config.json nor an image_processor in " \
           "processor_config.json)" in line
    bert = _save_model(tf.BertModel(tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=37)),
                       tmp_path / "bert-without-tokenizer")
    line, weight = _add_in_subprocess(bert, my_home)
    assert weight == "LIGHT" and "no tokenizer (tokenizer.json, vocab.txt" in line, line
    gpt2 = _unsupported("gpt2", tmp_path / "gpt2")
    line, weight = _add_in_subprocess(gpt2, my_home)
    assert "is not supported" in line and weight == "LIGHT"


# ---- names: not replaced silently; imported models removed ------------------------------------------------------
def _names(cli_run) -> dict:
    return {r["name"]: r for r in json.loads(cli_run("models", "list", "--json").stdout)}


def test_an_existing_name_needs_force_and_models_remove_deletes_an_import(my_home, cli_run, tmp_path):
    import featstore

    vit = hf_tiny.build("vit", tmp_path / "tiny-vit")
    convnext = hf_tiny.build("convnext", tmp_path / "tiny-convnext")
    cli_run("models", "add", vit, "--name", "mine")
    entry = my_home / "models" / "mine.toml"
    before = entry.read_text()
    line = _error_line(cli_run("models", "add", convnext, "--name", "mine", ok=False))
    assert f"a model named 'mine' exists already (imported from {vit}); pass --force to replace it" in line
    assert entry.read_text() == before                                    # nothing replaced, nothing exported
    assert not list((my_home / "exports").glob("mine-*.onnx"))[1:]
    rows = json.loads(cli_run("models", "add", convnext, "--name", "mine", "--force", "--json").stdout)
    assert rows[0]["source"] == str(convnext) and _names(cli_run)["mine"]["source"] == str(convnext)

    store = tmp_path / "store"
    cli_run("embed", SAMPLE / "roses", "--model", "mine", "--store", store, "--no-progress")
    assert list((my_home / "exports").glob("mine-*.onnx"))
    out = json.loads(cli_run("models", "remove", "mine", "--json").stdout)
    assert out["removed"] == ["mine"] and str(entry) in out["files"]
    assert not entry.exists() and not list((my_home / "exports").glob("mine-*.onnx"))
    assert "mine" not in _names(cli_run)
    X, ids = featstore.open(store).vectors(model="mine")                  # the store keeps its vectors
    assert X.shape == (len(list((SAMPLE / "roses").glob("*.jpg"))), 16) and len(ids) == len(X)
    r = cli_run("search", "--id", int(ids[0]), "-k", "3", "--store", store, "--json")
    assert len(json.loads(r.stdout)["results"]) == 3
    line = _error_line(cli_run("search", "--like", sorted((SAMPLE / "daisy").glob("*.jpg"))[0], "--store", store,
                               ok=False))
    assert "the ONNX file of model mine" in line and "is gone" in line

    line = _error_line(cli_run("models", "remove", "efficientnet-lite0", ok=False))
    assert "'efficientnet-lite0' is a built-in backbone; only models imported with `featstore models add` can be " \
           "removed" in line
    line = _error_line(cli_run("models", "remove", "mine", ok=False))
    assert "unknown imported model 'mine'" in line


def test_removing_a_dual_encoder_removes_both_towers_python_api(my_home, cli_run, tmp_path):
    import featstore

    folder = hf_tiny.build("clip", tmp_path / "pair")
    featstore.add_model(str(folder), log=lambda _m: None)
    assert {"pair", "pair-text"} <= set(_names(cli_run))
    with pytest.raises(featstore.FeatstoreError, match="a model named 'pair' exists already"):
        featstore.add_model(str(folder), log=lambda _m: None)
    with pytest.raises(featstore.FeatstoreError, match="a model named 'pair-text' exists already"):
        featstore.add_model(str(hf_tiny.build("clip", tmp_path / "other")), name="pair-text",
                            log=lambda _m: None)
    out = featstore.remove_model("pair-text")
    assert sorted(out["removed"]) == ["pair", "pair-text"]
    assert not {"pair", "pair-text"} & set(_names(cli_run))
    assert not [p for p in (my_home / "exports").glob("pair*.onnx")]


# ---- zero-shot picks its set as search --text does ------------------------------------------------------------
def test_zero_shot_without_model_uses_the_dual_encoders_set_like_search_text(my_home, cli_run, tmp_path):
    """A store with a CLIP set and then a newer image-only set (the default backbone): search --text and a
    zero-shot head both use the CLIP set."""
    import featstore

    cli_run("models", "add", hf_tiny.build("clip", tmp_path / "zs-clip"))
    photos = tmp_path / "flowers"
    for p in sample_images(4):
        (photos / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, photos / p.parent.name / p.name)
    store = tmp_path / "store"
    cli_run("embed", photos, "--model", "zs-clip", "--store", store, "--no-progress")
    cli_run("embed", photos, "--store", store, "--no-progress")                 # efficientnet-lite0, newer
    stats = featstore.open(store).stats()
    assert [s["model"] for s in stats["embedding_sets"]] == ["zs-clip", "efficientnet-lite0"]
    hits = json.loads(cli_run("search", "--text", "a red rose", "--store", store, "--json").stdout)
    assert hits["model"] == "zs-clip"
    cli_run("fit-head", "--task", "flowers", "--kind", "zero-shot", "--name", "zs", "--store", store)
    stats = featstore.open(store).stats()
    head = next(h for h in stats["heads"] if h["name"] == "zs")
    model = {s["set_id"]: s["model"] for s in stats["embedding_sets"]}[head["set_id"]]
    assert model == hits["model"] == "zs-clip"
