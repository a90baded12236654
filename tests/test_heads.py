"""Heads on real cached features: the estimator contract, the fast CV solver against scikit-learn, the stored
split, the leaderboard, few-shot curves, labels from CSV (and a numeric target), fused one-file export."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import embed_into_new_store, query

ROOT = Path(__file__).parents[1]
PARITY = ROOT / "featstore" / "data" / "parity"


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    """The bundled sample (100 photos, 5 classes) embedded once."""
    return embed_into_new_store(tmp_path_factory, "heads")


@pytest.fixture(scope="module")
def features(store):
    from featstore.store.db import Store

    with Store.open(store) as st:
        _, X, y = st.labelled(st.pick_set(None), "flowers")
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y.astype(str), test_size=20, stratify=y, random_state=0)


def _json(result):
    return json.loads(result.stdout)


# ---- estimators -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logreg", "svm", "ridge", "knn", "linear", "mlp"])
def test_every_head_is_a_scikit_learn_classifier(kind, features):
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from featstore.heads import CLASSIFIERS

    X_tr, X_te, y_tr, y_te = features
    est = clone(CLASSIFIERS[kind][0]())
    est.fit(X_tr, y_tr)
    proba = est.predict_proba(X_te)
    assert proba.shape == (len(X_te), 5) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert set(est.predict(X_te)) <= set(y_tr)
    assert est.score(X_te, y_te) >= 0.7, kind                      # chance is 0.2
    pipe = make_pipeline(FunctionTransformer(lambda x: x * 2.0), CLASSIFIERS[kind][0]())
    assert cross_val_score(pipe, X_tr, y_tr, cv=2).mean() >= 0.5


def test_grid_search_over_a_head(features):
    from sklearn.model_selection import GridSearchCV

    from featstore.heads import LogisticRegressionHead

    X_tr, X_te, y_tr, y_te = features
    g = GridSearchCV(LogisticRegressionHead(), {"C": [0.001, 0.1]}, cv=3).fit(X_tr, y_tr)
    assert g.best_params_["C"] in (0.001, 0.1) and g.score(X_te, y_te) >= 0.7


@pytest.mark.parametrize("n_features", [1280, 40])         # n < d: the Gram route; n > d: the primal route
def test_fast_logreg_solves_the_same_problem_as_scikit_learn(features, n_features):
    from sklearn.linear_model import LogisticRegression

    from featstore.heads import LogisticRegressionHead
    from featstore.heads.base import standardiser

    X_tr, X_te, y_tr, _ = features
    X_tr, X_te = X_tr[:, :n_features], X_te[:, :n_features]
    ours = LogisticRegressionHead(C=0.05, tol=1e-8).fit(X_tr, y_tr)
    mean, scale = standardiser(X_tr)
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=10000).fit((X_tr - mean) / scale, y_tr)
    ref_proba = ref.predict_proba((X_te - mean) / scale)
    assert np.abs(ours.predict_proba(X_te) - ref_proba).max() < 2e-3
    assert (ours.predict(X_te) == ref.predict((X_te - mean) / scale)).all()


def test_cv_chooses_C_on_the_training_part_only(features):
    from featstore.heads import LogisticRegressionHead

    X_tr, _, y_tr, _ = features
    est = LogisticRegressionHead().fit(X_tr, y_tr)
    s = est.search_
    assert s["param"] == "C" and s["folds"] == 5 and len(s["cv_accuracy"]) == 8
    assert est.C_ == s["grid"][int(np.argmin(s["cv_log_loss"]))]       # log-loss: accuracy ties on small data


# ---- fit-head: stored split, leaderboard, few-shot ------------------------------------------------------------
def _embed_mirrored(run, store, small_folder, tmp_path):
    """40 new contents for the module's store: mirrored copies of 8 sample photos per class (task 'flowers').
    Embedding them twice adds nothing, so tests that need them can each ask for them."""
    extra = tmp_path / "flowers"
    for p in sorted(Path(small_folder).rglob("*.jpg")):
        (extra / p.parent.name).mkdir(parents=True, exist_ok=True)
        img = Image.open(p).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT)  # new content, same class
        img.save(extra / p.parent.name / f"flipped-{p.name}", quality=90)
    run("embed", extra, "--store", store, "--no-progress")


def test_split_is_stored_and_never_moves(run, store, small_folder, tmp_path):
    first = _json(run("fit-head", "--task", "flowers", "--store", store, "--json"))
    split = dict(query(store, "SELECT hash, split FROM splits WHERE task = 'flowers'"))
    assert len(split) == 100 and sum(v == "test" for v in split.values()) == 20
    again = _json(run("fit-head", "--task", "flowers", "--head", "ridge", "--name", "r", "--store", store, "--json"))
    assert again["metrics"]["n_test"] == first["metrics"]["n_test"] == 20
    # new labelled items: old assignments stay, the new ones are topped up per class
    _embed_mirrored(run, store, small_folder, tmp_path)
    third = _json(run("fit-head", "--task", "flowers", "--force", "--store", store, "--json"))
    after = dict(query(store, "SELECT hash, split FROM splits WHERE task = 'flowers'"))
    assert all(after[h] == s for h, s in split.items())
    assert len(after) == 140 and third["metrics"]["n_test"] == 5 * round(0.2 * 28)   # 6 per class


def test_leaderboard_fits_and_stores_every_head(run, store):
    out = _json(run("fit-head", "--task", "flowers", "--head", "all", "--name", "lb", "--store", store, "--json"))
    kinds = [r["kind"] for r in out["rows"]]
    assert sorted(kinds) == ["knn", "linear", "logreg", "mlp", "ridge", "svm"]
    values = [r["value"] for r in out["rows"]]
    assert values == sorted(values, reverse=True) and min(values) >= 0.6
    assert all(r["fit_seconds"] > 0 and r["predictions_per_second"] > 0 for r in out["rows"])
    listed = {h["name"]: h for h in _json(run("heads", "--store", store, "--json"))}
    assert {f"lb-{k}" for k in kinds} <= set(listed)
    human = run("fit-head", "--task", "flowers", "--head", "all", "--name", "lb", "--force", "--store", store).output
    assert "predictions/s" in human and "lb-knn" in human


def test_fit_head_says_how_each_hyperparameter_was_chosen(run, store):
    said = {args: run("fit-head", "--task", "flowers", "--name", "how", "--force", *args, "--store", store).output
            for args in (("--C", "1"), ("--head", "knn"), ("--head", "ridge"))}
    assert "C fixed at 1 (given, not searched)" in said[("--C", "1")]
    assert "k chosen on the training part by leave-one-out" in said[("--head", "knn")]
    assert "alpha chosen on the training part by leave-one-out (GCV)" in said[("--head", "ridge")]


def test_every_stored_head_predicts_its_held_out_files(run, store):
    run("fit-head", "--task", "flowers", "--head", "all", "--name", "p", "--store", store, "--json")
    held_out = query(store, "SELECT i.path, l.label FROM splits s JOIN items i ON i.hash = s.hash "
                            "JOIN labels l ON l.path = i.path AND l.task = s.task "
                            "WHERE s.task = 'flowers' AND s.split = 'test' ORDER BY i.path")
    assert len(held_out) >= 20
    for kind in ("logreg", "svm", "ridge", "knn", "linear", "mlp"):
        out = _json(run("predict", "--head", f"p-{kind}", *[p for p, _ in held_out], "--store", store, "--json"))
        assert out["embedded_now"] == 0
        right = sum(r["label"] == lab for r, (_, lab) in zip(out["predictions"], held_out))
        assert right >= 0.6 * len(held_out), (kind, right)          # chance is 0.2


def test_few_shot_curve_and_plots(run, store, tmp_path):
    out = _json(run("fit-head", "--task", "flowers", "--shots", "1,2,5", "--seeds", "3", "--store", store,
                    "--plot", tmp_path / "curve.png", "--json"))
    assert [r["shots"] for r in out["rows"]] == [1, 2, 5, "all"]
    assert all(r["runs"] == 3 for r in out["rows"][:3]) and out["rows"][-1]["accuracy_mean"] >= 0.7
    assert out["rows"][2]["accuracy_mean"] > out["chance"]
    assert Image.open(tmp_path / "curve.png").size[0] > 100
    run("fit-head", "--task", "flowers", "--name", "plotted", "--plot", tmp_path / "cm.png", "--store", store)
    assert Image.open(tmp_path / "cm.png").format == "PNG"


def test_fit_head_errors_are_one_line(run, store):
    for args, message in ((["--head", "forest"], "unknown head kind for a classification task 'forest'"),
                          (["--head", "knn", "--C", "1"], "--C applies to --kind logreg only"),
                          (["--target", "numeric"], "labels that are not numbers")):
        r = run("fit-head", "--task", "flowers", "--store", store, *args, ok=False)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output


# ---- labels from CSV, numeric target ---------------------------------------------------------------------------
def test_label_csv_by_hash_and_path_then_regression(run, store, small_folder, tmp_path):
    _embed_mirrored(run, store, small_folder, tmp_path)      # 140 contents, whichever test ran first
    rows = query(store, "SELECT path, hash FROM items WHERE status = 'ok' ORDER BY path")
    brightness = {h: float(np.asarray(Image.open(p).convert("L"), np.float32).mean()) for p, h in rows}
    lines = ["hash,label"] + [f"{h},{v:.3f}" for h, v in brightness.items()] + ["0" * 32 + ",12.0"]
    (tmp_path / "bright.csv").write_text("\n".join(lines) + "\n")
    out = _json(run("label", "--task", "brightness", "--csv", tmp_path / "bright.csv", "--store", store, "--json"))
    assert out["labelled_paths"] == len(rows) and len(out["unmatched"]) == 1
    # by path, relative to the CSV's folder
    first = Path(rows[0][0])
    (tmp_path / "colour.csv").write_text(f"path,label\n{first},red\nmissing.jpg,blue\n")
    out = _json(run("label", "--task", "colour", "--csv", tmp_path / "colour.csv", "--store", store, "--json"))
    assert out["labelled_paths"] == 1 and out["unmatched"][0]["key"] == "missing.jpg"
    assert ("colour", str(first), "red") in query(store, "SELECT task, path, label FROM labels")

    for kind in ("ridge", "mlp"):
        res = _json(run("fit-head", "--task", "brightness", "--head", kind, "--name", f"b-{kind}",
                        "--store", store, "--json"))
        m = res["metrics"]
        assert res["task_type"] == "regression"
        assert abs(m["n_test"] - 0.2 * (m["n_train"] + m["n_test"])) <= 3
        assert m["test_r2"] > 0.3 and m["test_mae"] < 25, (kind, m)
    pred = _json(run("predict", "--head", "b-ridge", sorted(PARITY.glob("*.jpg"))[0], "--store", store, "--json"))
    assert 0 < pred["predictions"][0]["value"] < 255


def test_label_csv_without_the_right_columns(run, store, tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.jpg,x\n")
    r = run("label", "--task", "t", "--csv", tmp_path / "bad.csv", "--store", store, ok=False)
    assert r.exit_code != 0 and "bad.csv: needs a header with a 'path' or 'hash' column" in r.output


# ---- fused one-file export ---------------------------------------------------------------------------------------
def _readme_example() -> str:
    text = (ROOT / "docs" / "heads.md").read_text()
    block = re.search(r"<!-- fused-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/heads.md lost its fused-model example"
    return block.group(1)


@pytest.mark.parametrize("kind", ["logreg", "knn", "mlp"])
def test_fused_export_runs_with_onnxruntime_alone(run, store, tmp_path, kind):
    run("fit-head", "--task", "flowers", "--head", kind, "--name", f"fx-{kind}", "--store", store)
    model = tmp_path / f"{kind}.onnx"
    out = _json(run("export", "--head", f"fx-{kind}", model, "--store", store, "--json"))
    assert out["max_abs_diff"] <= 1e-4 and out["checked_on"] == "5 real photos"
    photo = sorted(PARITY.glob("*.jpg"))[2]
    expected = _json(run("predict", "--head", f"fx-{kind}", photo, "--store", store, "--json"))["predictions"][0]
    # the docs' example (docs/heads.md), run as a user would: a fresh interpreter that loads no torch, store or
    # scikit-learn (featstore.preprocess needs numpy and Pillow only)
    code = _readme_example().replace('"flowers.onnx"', repr(str(model))).replace('"photo.jpg"', repr(str(photo)))
    code = "import sys\n" + code + "\nassert not [m for m in sys.modules if m.split('.')[0] in " \
        "('torch', 'duckdb', 'faiss', 'sklearn', 'onnx')]\n" \
        "print(json.dumps({'label': classes[int(probs.argmax())], 'p': probs.tolist()}))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["label"] == expected["label"]
    assert np.abs(np.array(got["p"]) - np.array(list(expected["probabilities"].values()))).max() < 1e-4


def test_tampered_head_is_refused_not_run(run, store):
    import duckdb

    run("fit-head", "--task", "flowers", "--name", "tampered", "--store", store)
    con = duckdb.connect(str(store / "store.duckdb"))
    params = json.loads(con.execute("SELECT params FROM heads WHERE name = 'tampered'").fetchone()[0])
    params["program"]["steps"][0]["op"] = "__import__('os').system"
    con.execute("UPDATE heads SET params = ? WHERE name = 'tampered'", [json.dumps(params)])
    con.close()
    r = run("predict", "--head", "tampered", sorted(PARITY.glob("*.jpg"))[0], "--store", store, ok=False)
    assert r.exit_code != 0 and "operation this featstore does not know" in r.output
