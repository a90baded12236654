"""The Python API: docs/python-api.md's walk-through runs as written, and the handle's verbs match the CLI."""
import re
from pathlib import Path

import pytest

from conftest import SAMPLE

DOC = Path(__file__).parent.parent / "docs" / "python-api.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_walkthrough_runs(home, tmp_path, monkeypatch, capsys):
    """Every python block of the doc, in order, in one namespace, from a folder laid out like the repository."""
    (tmp_path / "tests" / "data").mkdir(parents=True)
    (tmp_path / "tests" / "data" / "flowers").symlink_to(SAMPLE)
    monkeypatch.chdir(tmp_path)
    blocks = snippets()
    quick_start = [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]
    assert len(quick_start) <= 10          # embed, fit, search and pandas in at most ten lines of user code
    namespace = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["head"]["metrics"]["test_accuracy"] > 0.8
    assert namespace["hits"]["results"][0]["path"].endswith("10090824183_d02c613f10_m.jpg")
    assert (tmp_path / "demo-store" / "store.duckdb").is_file()


def test_api_and_cli_agree(home, tmp_path, run):
    import featstore

    store = tmp_path / "store"
    run("embed", SAMPLE, "--store", store, "--no-progress")
    fs = featstore.open(store)
    rose = str(sorted((SAMPLE / "roses").glob("*.jpg"))[0])
    via_api = fs.search(like=rose, k=4, where="label = 'roses'", task="flowers")
    import json

    via_cli = json.loads(run("search", "--like", rose, "-k", 4, "--where", "label = 'roses'", "--task", "flowers",
                             "--store", store, "--json").output)
    assert [r["item_id"] for r in via_api["results"]] == [r["item_id"] for r in via_cli["results"]]
    batch = fs.search(ids=[1, 2], k=3)
    assert isinstance(batch, list) and len(batch) == 2
    X, ids = fs.vectors()
    frame = fs.to_pandas()
    assert list(frame["item_id"]) == list(ids) and X.dtype.name == "float32"
    assert (frame["vector"][0] == X[0]).all()
    assert fs.to_arrow().num_rows == len(ids) == len(fs.items())
    assert frame["label"].notna().all() and set(fs.items()["label"]) == {"daisy", "dandelion", "roses",
                                                                          "sunflowers", "tulips"}   # the only task


def test_options_are_checked(tmp_path):
    import featstore

    fs = featstore.open(tmp_path / "store")
    with pytest.raises(TypeError, match="unknown option"):
        fs.embed(SAMPLE, batchsize=8)
    with pytest.raises(featstore.FeatstoreError, match="--C applies to --kind logreg only"):
        fs.fit_head("flowers", head="svm", C=1.0)
    with pytest.raises(featstore.FeatstoreError, match="no such file"):
        fs.embed(tmp_path / "missing")
