"""The finetune head on real EfficientNet-Lite0 weights and real photos: fitted on stored activations, scored on
the stored split, stored as arrays; its fused one-file export agrees with torch and with predict, and predict runs
without torch. Tiny random ViT / DINOv2 models (sockets blocked) go through the same path at `last-block`."""
import json
import subprocess
import sys

import numpy as np
import pytest

import hf_tiny
from conftest import SAMPLE, cli_runner, network_blocked, private_homes

FAST = {"max_epochs": 4, "patience": 2}


@pytest.fixture(scope="module")
def cli(home):
    return cli_runner()


@pytest.fixture(scope="module")
def store(home, cli, tmp_path_factory):
    """tests/data/flowers with Lite0 activations at conv-head, 2 views each."""
    path = tmp_path_factory.mktemp("ft") / "store"
    cli("embed", SAMPLE, "--store", path, "--cut", "conv-head", "--views", "2", "--no-progress")
    return path


def _fit(path, name, **params):
    from featstore.heads.fit import fit_head
    from featstore.store.db import Store

    with Store.open(path, write=True) as st:
        return fit_head(st, "flowers", "finetune", name=name, force=True, **{**FAST, **params})


def test_finetune_cli_fits_scores_on_stored_split_and_stores(store, cli):
    out = json.loads(cli("fit-head", "--task", "flowers", "--kind", "finetune", "--name", "ft", "--store", store,
                         "--json").stdout)
    m = out["metrics"]
    assert out["kind"] == "finetune" and out["params"]["cut"] == "conv-head" and m["views"] == 2
    assert m["split"] == "stored" and m["n_test"] == 20 and m["n_train"] == 80
    assert m["test_accuracy"] >= 0.7                       # 5 classes: chance is 0.2
    assert m["onnx_parity"] <= 1e-4 and m["fit_seconds"] > 0 and m["cv"]["param"] == "epochs"
    logreg = json.loads(cli("fit-head", "--task", "flowers", "--name", "lr", "--store", store, "--json").stdout)
    assert logreg["metrics"]["n_test"] == m["n_test"]          # the same held-out items
    heads = {h["name"]: h for h in json.loads(cli("heads", "--store", store, "--json").stdout)}
    assert heads["ft"]["kind"] == "finetune"
    # the former spelling --head keeps working
    again = cli("fit-head", "--task", "flowers", "--head", "finetune", "--cut", "conv-head", "--name", "ft2",
                "--store", store, "--json")
    assert json.loads(again.stdout)["kind"] == "finetune"
    assert json.loads(again.stdout)["metrics"]["history"] == m["history"]          # seeded: the same training


def test_seeded_fit_is_repeatable(store):
    a, b = _fit(store, "ft-a"), _fit(store, "ft-b")
    assert a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]
    assert a["metrics"]["history"] == b["metrics"]["history"]


def test_fused_export_matches_torch(store, tmp_path):
    """One ONNX file (image -> frozen bottom -> tuned top -> linear -> softmax) against the same computation in
    torch: the backbone's own layers below the cut, the tuned top module, the linear layer."""
    import onnxruntime as ort
    import torch

    import featstore
    from featstore.heads.finetune import read_task_activations, tune, activation_set_for_task
    from featstore.heads.finetune_train import TuneSettings
    from featstore.heads.fit import load_task
    from featstore.heads.storage import save_head
    from featstore.models.catalog import resolve
    from featstore.models.cuts import _split
    from featstore.models.deploy import preprocess
    from featstore.models.export import parity_photos, photo_batch
    from featstore.store.db import Store

    with Store.open(store, write=True) as st:
        data = load_task(st, "flowers", None, "class")
        aset = activation_set_for_task(st, data.eset)
        acts = read_task_activations(st, aset, data.hashes)
        classes = sorted(set(data.y.tolist()))
        program, report, top = tune(aset, acts, data.y, np.flatnonzero(~data.test), classes, TuneSettings(**FAST))
        save_head(st, "ft-torch", "finetune", "flowers", data.eset.set_id, program,
                  {"estimator": "finetune", "params": {}, "act_id": aset.act_id, "cut": aset.cut,
                   "model": aset.model}, {"test_accuracy": 0.0})
    out = featstore.open(store).export("ft-torch", tmp_path / "ft.onnx")
    assert out["max_abs_diff"] <= 1e-4
    spec = resolve("efficientnet-lite0")
    bottom, _ = _split(spec, "conv-head")
    with torch.no_grad():
        features = top(bottom(torch.from_numpy(photo_batch(spec.preprocess))))
        w, b = program.steps[1].arrays["weight"], program.steps[1].arrays["bias"]
        expected = torch.softmax(features @ torch.from_numpy(w) + torch.from_numpy(b), dim=1).numpy()
    session = ort.InferenceSession(str(tmp_path / "ft.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, preprocess(session, [str(p) for p in parity_photos()]))[0]
    assert got.shape == (len(parity_photos()), 5)
    assert np.abs(got - expected).max() <= 1e-4


def test_export_equals_predict_and_predict_needs_no_torch(store, cli, tmp_path):
    _fit(store, "ft-p")
    cli("export", "--head", "ft-p", "--store", store, tmp_path / "f.onnx")
    files = sorted(str(p) for p in (SAMPLE / "tulips").glob("*.jpg"))[:6]
    import onnxruntime as ort

    from featstore.models.deploy import preprocess

    session = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["featstore.kind"] == "finetune"
    exported = session.run(None, preprocess(session, files))[0]
    # predict in a fresh interpreter where importing torch fails
    code = ("import sys, json\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('torch is blocked in this test')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import featstore\n"
            f"out = featstore.open({str(store)!r}).predict('ft-p', {files!r})\n"
            "assert 'torch' not in sys.modules\n"
            "print(json.dumps(out))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)["predictions"]
    classes = json.loads(meta["featstore.outputs"])
    got = np.array([[r["probabilities"][c] for c in classes] for r in rows])
    assert np.abs(got - exported).max() <= 1e-5           # predict rounds to 6 decimals


def _export_equals_predict(cli, store, onnx_path, files, inputs=None):
    """Head 'ft' exported (its own parity check within 1e-4) gives, on `inputs` (default: the files themselves),
    the probabilities `predict` gives on `files` (predict rounds to 6 decimals)."""
    import onnxruntime as ort

    from featstore.models.deploy import preprocess

    exported = json.loads(cli("export", "--head", "ft", "--store", store, onnx_path, "--json").stdout)
    assert exported["max_abs_diff"] <= 1e-4
    rows = json.loads(cli("predict", "--head", "ft", "--store", store, *files, "--json").stdout)["predictions"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["featstore.outputs"])
    want = session.run(None, preprocess(session, files if inputs is None else inputs))[0]
    got = np.array([[r["probabilities"][c] for c in classes] for r in rows])
    assert np.abs(got - want).max() <= 1e-5


def test_store_without_cut_activations_names_the_command(home, cli, tmp_path):
    path = tmp_path / "plain"
    cli("embed", SAMPLE, "--store", path, "--no-progress")
    r = cli("fit-head", "--task", "flowers", "--kind", "finetune", "--store", path, ok=False)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "embed" in lines[0] and "--cut" in lines[0] and "Traceback" not in r.output
    r = cli("fit-head", "--task", "flowers", "--kind", "finetune", "--cut", "last-block", "--store", path, ok=False)
    assert r.exit_code != 0 and "--cut last-block" in r.output and "Traceback" not in r.output
    r = cli("fit-head", "--task", "flowers", "--kind", "finetune", "--cut", "nope", "--store", path, ok=False)
    assert r.exit_code != 0 and "conv-head" in r.output and "last-block" in r.output      # the valid cuts listed
    r = cli("fit-head", "--task", "flowers", "--cut", "conv-head", "--store", path, ok=False)
    assert r.exit_code != 0 and "--kind finetune" in r.output
    board = cli("fit-head", "--task", "flowers", "--kind", "all", "--store", path, "--json")
    assert "finetune" not in [row["kind"] for row in json.loads(board.stdout)["rows"]]


def test_leaderboard_includes_finetune(store):
    from featstore.heads.fit import leaderboard
    from featstore.store.db import Store

    with Store.open(store, write=True) as st:
        out = leaderboard(st, "flowers", name="board", force=True)
    kinds = [r["kind"] for r in out["rows"]]
    assert "finetune" in kinds and "logreg" in kinds
    ft = next(r for r in out["rows"] if r["kind"] == "finetune")
    assert 0.0 <= ft["value"] <= 1.0 and ft["chosen"].get("epochs")


def test_few_shot_curve_of_finetune(store):
    from featstore.heads.fit import few_shot
    from featstore.store.db import Store

    with Store.open(store, write=True) as st:
        out = few_shot(st, "flowers", [2], seeds=1, kind="finetune")
    assert [r["shots"] for r in out["rows"]] == [2, "all"]
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in out["rows"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with network_blocked(), private_homes(tmp_path_factory.mktemp("ft-hf-home")):
        yield cli_runner(), tmp_path_factory.mktemp("ft-hf-models")


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_tiny_transformer_finetune_export_and_predict(tiny, kind, tmp_path):
    cli, root = tiny
    folder = hf_tiny.build(kind, root / f"tiny-{kind}")
    rows = json.loads(cli("models", "add", folder, "--name", f"ft-{kind}", "--json").stdout)
    name = next(r["name"] for r in rows if r["modality"] == "image")
    store = tmp_path / "store"
    cli("embed", SAMPLE, "--store", store, "--model", name, "--cut", "last-block", "--no-progress")
    out = _fit(store, "ft")
    assert out["params"]["cut"] == "last-block" and out["metrics"]["onnx_parity"] <= 1e-4
    files = sorted(str(p) for p in (SAMPLE / "daisy").glob("*.jpg"))[:4]
    _export_equals_predict(cli, store, tmp_path / "t.onnx", files)


def test_minilm_last_block_finetune_on_bbc(home, cli, tmp_path):
    """Real all-MiniLM-L6-v2 on real BBC News articles (8 per class): the last transformer block tuned on the
    stored hidden states; the fused export (tokens -> frozen blocks -> tuned block -> head) equals predict."""
    from test_text import bbc_labelled_folder

    folder = bbc_labelled_folder(tmp_path / "bbc", 8)
    store = tmp_path / "store"
    cli("embed", folder, "--store", store, "--cut", "last-block", "--no-progress")
    from featstore.heads.fit import fit_head
    from featstore.store.db import Store

    with Store.open(store, write=True) as st:
        out = fit_head(st, "bbc", "finetune", name="ft", **FAST)
    assert out["params"]["cut"] == "last-block" and out["metrics"]["onnx_parity"] <= 1e-4
    from featstore.embed.text_source import read_text_source

    files = sorted(str(p) for p in (folder / "tech").glob("*.txt"))[:3]
    _export_equals_predict(cli, store, tmp_path / "t.onnx", files, [read_text_source(f)[0][0].text for f in files])


def test_served_pages_run_a_finetune_head_on_stored_activations(store, cli):
    """The gallery, the item page, the map coloured by the head and its confusion cells all score a fine-tuned
    head through its stored activations (a pooled vector is not its input), agreeing with predict's labels."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    _fit(store, "ft-served")
    state = ServerState(store)
    try:
        with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as c:
            grid = c.get("/grid", params={"task": "flowers", "head": "ft-served", "limit": 200})
            assert grid.status_code == 200, grid.text
            items = grid.json()["items"]
            assert len(items) == 100
            first = items[0]
            view = c.get(f"/items/{first['item_id']}/view", params={"task": "flowers"})
            assert view.status_code == 200, view.text
            tuned = [p for p in view.json()["predictions"] if p["head"] == "ft-served"]
            assert len(tuned) == 1 and abs(sum(p for _, p in tuned[0]["top"]) - 1) < 0.5
            coloured = c.get("/map", params={"method": "pca", "color": "head:ft-served"})
            assert coloured.status_code == 200, coloured.text
            cells = c.get("/heads/ft-served/confusion")
            assert cells.status_code == 200, cells.text
            assert sum(map(sum, cells.json()["matrix"])) == 20
    finally:
        state.close()
    predicted = json.loads(cli("predict", "--head", "ft-served", first["path"], "--store", store, "--json").stdout)
    assert tuned[0]["top"][0][0] == predicted["predictions"][0]["label"]
