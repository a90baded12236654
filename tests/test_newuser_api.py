"""The Python API returns objects: fit_head/search/audit results with to_pandas (their --json unchanged), fs.Xy and
table vectors usable without np.stack, and fs.head(name) as a fitted scikit-learn estimator."""
import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLE, embed_into_new_store


@pytest.fixture(scope="module")
def stores(home, tmp_path_factory):
    """(a store with the sample embedded, a copy of it taken before any head was fitted)."""
    store = embed_into_new_store(tmp_path_factory, "newuser-api")
    pristine = tmp_path_factory.mktemp("newuser-api-pristine") / "store"
    shutil.copytree(store, pristine)
    return store, pristine


@pytest.fixture(scope="module")
def fs(stores):
    import featstore

    return featstore.open(stores[0])


def test_fit_search_audit_return_result_objects(fs, run, stores):
    import featstore

    fit = fs.fit_head("flowers")
    assert isinstance(fit, featstore.FitResult) and isinstance(fit, dict)
    assert fit["metrics"]["test_accuracy"] > 0.8                       # dict access as before
    table = fit.to_pandas()
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert sorted(table["class"]) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert table["support"].sum() == fit["metrics"]["n_test"]
    assert repr(fit).startswith("FitResult(head 'flowers' (logreg)") and "held-out accuracy" in repr(fit)

    curve = fs.fit_head("flowers", shots=[1, 2], seeds=2)
    assert list(curve.to_pandas()["shots"]) == [1, 2, "all"] and "few-shot curve" in repr(curve)

    hits = fs.search(ids=3, k=4)
    assert isinstance(hits, featstore.SearchResult)
    frame = hits.to_pandas()
    assert list(frame.columns) == ["query", "rank", "score", "item_id", "path", "label"]
    assert list(frame["rank"]) == [1, 2, 3, 4] and list(frame["item_id"]) == [r["item_id"] for r in hits["results"]]
    assert "4 nearest to" in repr(hits) and hits["results"][0]["path"] in repr(hits)
    batch = fs.search(ids=[3, 4], k=2)
    assert isinstance(batch, list) and len(batch) == 2 and all(isinstance(b, featstore.SearchResult) for b in batch)
    both = batch.to_pandas()
    assert len(both) == 4 and both["query"].nunique() == 2 and "2 queries" in repr(batch)

    report = fs.audit("flowers")
    assert isinstance(report, featstore.AuditResult)
    rows = report.to_pandas()
    assert list(rows.columns) == ["finding", "rank", "item_id", "path", "given", "suggested", "score"]
    assert (rows["finding"] == "outlier").sum() == len(report["outliers"]) > 0
    assert (rows["finding"] == "label_issue").sum() == len(report["label_issues"])
    assert f"{len(report['label_issues'])} label issues" in repr(report)

    # the CLI's --json is the plain dict, byte for byte
    from featstore.search.query import Query, search_many
    from featstore.store.db import Store

    with Store.open(stores[0]) as store:
        plain = search_many(store, [Query("id", 3)], k=4)[0]
    expected = json.dumps(plain, indent=2, default=str, ensure_ascii=False) + "\n"
    assert type(plain) is dict and run("search", "--id", 3, "-k", 4, "--store", stores[0], "--json").output == expected
    assert json.dumps(hits, indent=2, default=str) == json.dumps(plain, indent=2, default=str)


def test_xy_and_vector_columns(fs, stores):
    import pandas as pd
    import pyarrow as pa

    import featstore

    fresh = featstore.open(stores[1])
    X, y = fresh.Xy("flowers")                                  # no split needed for all labelled items
    assert X.dtype == np.float32 and X.shape == (100, 1280) and len(y) == 100
    assert set(y) == {"daisy", "dandelion", "roses", "sunflowers", "tulips"}
    with pytest.raises(featstore.FeatstoreError, match="no stored held-out split yet: fit a head first"):
        fresh.Xy("flowers", split="train")
    with pytest.raises(featstore.FeatstoreError, match="split must be 'train', 'test' or None"):
        fresh.Xy("flowers", split="validation")

    fit = fs.fit_head("flowers", head="knn", name="nn")
    X_train, y_train = fs.Xy("flowers", split="train")
    X_test, y_test = fs.Xy("flowers", split="test")
    assert (len(y_train), len(y_test)) == (fit["metrics"]["n_train"], fit["metrics"]["n_test"]) == (80, 20)
    assert X_train.dtype == X_test.dtype == np.float32 and X_train.shape[1] == 1280
    # the very split fit_head scored on: the stored head reproduces its held-out accuracy
    assert fs.head("nn").score(X_test, y_test) == pytest.approx(fit["metrics"]["test_accuracy"])

    vectors, ids = fs.vectors(task="flowers")
    table = fs.to_arrow(task="flowers")
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 1280)
    assert np.array_equal(featstore.vectors_of(table), vectors)
    frame = fs.to_pandas(task="flowers")
    assert frame["vector"][0].dtype == np.float32 and frame["vector"][0].shape == (1280,)
    assert np.array_equal(featstore.vectors_of(frame), vectors)
    roses = frame[frame["label"] == "roses"]
    got = featstore.vectors_of(roses)
    assert got.shape == (20, 1280) and got.dtype == np.float32
    assert np.array_equal(got, vectors[np.isin(ids, roses["item_id"])])
    arrow_frame = table.to_pandas(types_mapper=pd.ArrowDtype)           # Arrow-backed columns work too
    assert np.array_equal(featstore.vectors_of(arrow_frame[arrow_frame["label"] == "roses"]), got)
    with pytest.raises(featstore.FeatstoreError, match="no 'vector' column"):
        featstore.vectors_of(fs.items(task="flowers"))


def test_head_is_a_fitted_sklearn_estimator(fs, tmp_path):
    from sklearn.base import ClassifierMixin, RegressorMixin, clone
    from sklearn.utils.validation import check_is_fitted

    import featstore
    from featstore.heads import LogisticRegressionHead

    if "flowers" not in [h["name"] for h in fs.heads()]:
        fs.fit_head("flowers")
    est = fs.head("flowers")
    assert isinstance(est, LogisticRegressionHead) and isinstance(est, ClassifierMixin)
    check_is_fitted(est)
    assert list(est.classes_) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"] and est.n_features_in_ == 1280

    files = [str(p) for p in sorted(SAMPLE.glob("*/*.jpg"))[::10]]
    frame = fs.to_pandas(task="flowers").set_index("path")
    X = featstore.vectors_of(frame.loc[files])
    proba = est.predict_proba(X)
    rows = fs.predict("flowers", files)["predictions"]
    theirs = np.array([[r["probabilities"][c] for c in est.classes_] for r in rows])
    assert np.abs(proba - theirs).max() <= 1e-5
    assert list(est.predict(X)) == [r["label"] for r in rows]

    X_train, y_train = fs.Xy("flowers", split="train")
    again = clone(est).fit(X_train, y_train)                   # its own class: clone and refit work
    assert np.abs(again.predict_proba(X) - proba).max() <= 1e-4

    # a regression head: predict only, equal to featstore's value
    csv = tmp_path / "size.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{(i * 7) % 23 / 3:.3f}\n" for i, p in enumerate(frame.index)))
    fs.label("size", csv)
    fs.fit_head("size", head="ridge", name="size-ridge")
    reg = fs.head("size-ridge")
    assert isinstance(reg, RegressorMixin) and not hasattr(reg, "predict_proba")
    values = [r["value"] for r in fs.predict("size-ridge", files)["predictions"]]
    assert np.abs(reg.predict(X) - np.array(values)).max() <= 1e-5
    with pytest.raises(featstore.FeatstoreError, match="unknown head 'nope'"):
        fs.head("nope")
