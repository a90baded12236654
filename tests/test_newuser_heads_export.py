"""A new user's heads and exports: stored names are not overwritten without --force (heads remove deletes one),
fit-head says --kind, predict leaves the store as it was unless --add, and a fused export carries what it takes to
feed it (featstore.preprocess, the tokenizer) so the docs' snippet gives predict's probabilities exactly."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hf_tiny
from conftest import query, sample_images

ROOT = Path(__file__).parent.parent
PARITY = ROOT / "featstore" / "data" / "parity"


def _json(result):
    return json.loads(result.stdout)


def _folder(root: Path, per_class: int = 6) -> Path:
    """A labelled folder of real photos (per_class per class, 5 classes)."""
    for p in sample_images(per_class):
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / p.parent.name / p.name)
    return root


@pytest.fixture(scope="module")
def store(home, tmp_path_factory):
    """30 real photos embedded with the default backbone."""
    from conftest import cli_runner

    root = tmp_path_factory.mktemp("newuser")
    store = root / "store"
    cli_runner()("embed", _folder(root / "flowers"), "--store", store, "--no-progress")
    return store


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    """A large JPEG with an EXIF orientation tag (featstore decodes it at a reduced scale, then turns it)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    img = Image.open(sorted(PARITY.glob("*.jpg"))[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    img.resize((img.width * 4, img.height * 4), Image.BICUBIC).save(path, quality=92, exif=exif)
    return path


def _heads(run, store) -> dict:
    return {h["name"]: h for h in _json(run("heads", "--store", store, "--json"))}


# ---- names -----------------------------------------------------------------------------------------------------
def test_fit_head_refuses_an_existing_name_without_force(run, store):
    run("fit-head", "--task", "flowers", "--name", "taken", "--store", store)
    r = run("fit-head", "--task", "flowers", "--kind", "knn", "--name", "taken", "--store", store, ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == ["Error: a head named 'taken' exists: pass --force to replace it, or "
                                             "--name to store under another name"]
    assert _heads(run, store)["taken"]["kind"] == "logreg"
    run("fit-head", "--task", "flowers", "--kind", "knn", "--name", "taken", "--force", "--store", store)
    assert _heads(run, store)["taken"]["kind"] == "knn"


def test_heads_remove(run, store):
    import featstore

    run("fit-head", "--task", "flowers", "--name", "gone", "--store", store)
    r = run("heads", "remove", "gone", "--store", store)
    assert "removed head 'gone' (logreg, task 'flowers')" in r.output
    assert "gone" not in _heads(run, store)
    assert not query(store, "SELECT * FROM head_arrays WHERE head = 'gone'")
    r = run("heads", "remove", "gone", "--store", store, ok=False)
    assert r.exit_code == 1 and "unknown head 'gone'" in r.output and "Traceback" not in r.output
    fs = featstore.open(store)
    fs.fit_head("flowers", name="gone-api")
    assert fs.remove_head("gone-api")["kind"] == "logreg" and "gone-api" not in {h["name"] for h in fs.heads()}
    with pytest.raises(featstore.FeatstoreError, match="exists: pass --force"):
        fs.fit_head("flowers", name="taken")


def test_leaderboard_refuses_before_fitting_any(run, store):
    run("fit-head", "--task", "flowers", "--kind", "knn", "--name", "lb-knn", "--store", store)
    r = run("fit-head", "--task", "flowers", "--kind", "all", "--name", "lb", "--store", store, ok=False)
    assert r.exit_code == 1 and "a head named 'lb-knn' exists: pass --force" in r.output
    assert [n for n in _heads(run, store) if n.startswith("lb-")] == ["lb-knn"]       # none fitted
    r = run("fit-head", "--task", "flowers", "--shots", "1,2", "--force", "--store", store, ok=False)
    assert r.exit_code == 1 and "--force does not combine with --shots" in r.output


def test_fit_head_says_kind_and_keeps_the_old_spelling(run, store):
    out = _json(run("fit-head", "--task", "flowers", "--kind", "knn", "--name", "by-kind", "--store", store,
                    "--json"))
    assert out["kind"] == "knn"
    r = run("fit-head", "--task", "flowers", "--head", "knn", "--name", "by-head", "--store", store, "--json")
    assert json.loads(r.stdout)["kind"] == "knn"
    assert r.stderr.strip() == "note: fit-head --head is now --kind (--kind knn)"
    r = run("fit-head", "--kind", "knn", "--head", "svm", "--store", store, ok=False)
    assert r.exit_code == 2 and "give the head kind once" in r.output
    assert "--kind" in run("fit-head", "--help").output and "--head" not in run("fit-head", "--help").output


# ---- predict leaves the store alone -----------------------------------------------------------------------------
def test_predict_stores_nothing_unless_add(run, store, tmp_path):
    import featstore

    run("fit-head", "--task", "flowers", "--name", "p", "--store", store)
    new = [shutil.copy2(p, tmp_path / p.name) for p in sorted(PARITY.glob("*.jpg"))[:2]]
    (tmp_path / "reviews.csv").write_text("text\nnot an image\n")
    before = (_json(run("stats", "--store", store, "--json"))["items"], query(store, "SELECT * FROM items"))
    files = [*new, tmp_path / "reviews.csv"]
    out = _json(run("predict", "--head", "p", *files, "--store", store, "--json"))
    assert [r["status"] for r in out["predictions"]] == ["ok", "ok", "failed"] and out["embedded_now"] == 2
    assert (_json(run("stats", "--store", store, "--json"))["items"], query(store, "SELECT * FROM items")) == before
    fs = featstore.open(store)
    assert fs.predict("p", new[0])["predictions"][0]["status"] == "ok"
    assert query(store, "SELECT * FROM items") == before[1]
    added = _json(run("predict", "--head", "p", *files, "--add", "--store", store, "--json"))
    assert added["embedded_now"] == 2
    assert [r.get("probabilities") for r in added["predictions"]] == [r.get("probabilities")
                                                                      for r in out["predictions"]]
    stored = dict(query(store, "SELECT path, status FROM items"))
    assert stored[str(new[0])] == "ok" and stored[str(tmp_path / "reviews.csv")] == "failed"


# ---- a fused export gives predict's numbers -----------------------------------------------------------------------
def _snippet() -> str:
    text = (ROOT / "docs" / "heads.md").read_text()
    return re.search(r"<!-- fused-example -->\s*```python\n(.*?)```", text, re.S).group(1)


def _snippet_probabilities(model: Path, given, cwd: Path) -> list[float]:
    """The docs' snippet run in a fresh interpreter on `given` (a photo's path, or a list of texts)."""
    code = _snippet().replace('"flowers.onnx"', repr(str(model))).replace('"photo.jpg"', repr(given))
    code = "import sys\n" + code + "\nassert not [m for m in sys.modules if m.split('.')[0] in " \
        "('torch', 'duckdb', 'faiss', 'sklearn', 'onnx', 'transformers')]\nprint(json.dumps(probs.tolist()))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def _export_matches_predict(run, store, head, inputs, tmp_path, given=None):
    model = tmp_path / f"{head}.onnx"
    run("export", "--head", head, model, "--store", store)
    out = _json(run("predict", "--head", head, *inputs, "--store", store, "--json"))
    for i, row in enumerate(out["predictions"]):
        got = _snippet_probabilities(model, str(inputs[i]) if given is None else given[i], tmp_path)
        assert np.abs(np.array(got) - np.array(list(row["probabilities"].values()))).max() <= 1e-5, row["path"]
    return model


def test_default_backbone_export_gives_predicts_probabilities(run, store, tmp_path, big_photo):
    run("fit-head", "--task", "flowers", "--name", "fx", "--store", store)
    _export_matches_predict(run, store, "fx", [big_photo, sorted(PARITY.glob("*.jpg"))[1]], tmp_path)


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_hf_backbone_export_gives_predicts_probabilities(run, home, tmp_path, big_photo, kind):
    """A ViT (whole image resized, bilinear) and a CLIP image tower (shorter side resized, bicubic, then cropped)."""
    folder = hf_tiny.build(kind, tmp_path / f"nu-{kind}")
    run("models", "add", folder, "--name", f"nu-{kind}-{tmp_path.name}")
    store = tmp_path / "store"
    run("embed", _folder(tmp_path / "flowers", 4), "--model", f"nu-{kind}-{tmp_path.name}", "--store", store,
        "--no-progress")
    run("fit-head", "--task", "flowers", "--store", store)
    meta = _export_matches_predict(run, store, "flowers", [big_photo, sorted(PARITY.glob("*.jpg"))[3]], tmp_path)
    import onnxruntime as ort

    p = json.loads(ort.InferenceSession(str(meta)).get_modelmeta().custom_metadata_map["featstore.preprocess"])
    assert (p["resize"], p["interpolation"]) == (("exact", "bilinear") if kind == "vit" else
                                                 ("shorter-side-then-crop", "bicubic"))


def test_text_export_carries_its_tokenizer(run, home, tmp_path):
    import onnxruntime as ort

    from featstore.models.catalog import resolve, spec_file
    from test_text import bbc_labelled_folder

    folder = bbc_labelled_folder(tmp_path / "news", 5)
    store = tmp_path / "store"
    run("embed", folder, "--store", store, "--no-progress")
    run("fit-head", "--task", "news", "--store", store)
    texts = ["Shares fell sharply after the bank reported a loss.", "The striker scored twice in the final."]
    for i, t in enumerate(texts):
        (tmp_path / f"q{i}.txt").write_text(t)
    model = _export_matches_predict(run, store, "news", [tmp_path / "q0.txt", tmp_path / "q1.txt"], tmp_path,
                                    given=[[t] for t in texts])
    meta = ort.InferenceSession(str(model)).get_modelmeta().custom_metadata_map
    spec = resolve("all-minilm-l6-v2")
    assert meta["featstore.tokenizer"] == spec_file(spec, spec.input["tokenizer"]).read_text(encoding="utf-8")
