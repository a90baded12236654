"""The user's own metadata as typed item columns: from a manifest's extra columns or `featstore meta --csv`,
filtered by --where (CLI, Python API, server) through the one guard, carried in results and frames; real photos,
ONNX Runtime and DuckDB."""
import json
import shutil

import pytest

from conftest import SAMPLE, query

CLASSES = ("daisy", "roses")
PER_CLASS = 6
WHERE = "iso > 100 AND camera = 'x'"


def _copy_images(folder, per_class=PER_CLASS):
    """Real photos copied under `folder`/<class>/; their relative paths, in order."""
    rel = []
    for cls in CLASSES:
        (folder / cls).mkdir(parents=True)
        for p in sorted((SAMPLE / cls).glob("*.jpg"))[:per_class]:
            shutil.copy2(p, folder / cls / p.name)
            rel.append(f"{cls}/{p.name}")
    return rel


@pytest.fixture(scope="module")
def manifest_store(tmp_path_factory, home):
    """A manifest (label + int, float, bool, date, text columns) embedded; (store, data folder, relative paths)."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("meta")
    rel = _copy_images(root / "imgs")
    lines = ["path,label,iso,exposure,flash,shot_on,camera"]
    for i, r in enumerate(rel):
        lines.append(f"imgs/{r},{r.split('/')[0]},{50 * (i + 1)},{0.25 * (i + 1)},{str(i % 3 == 0).lower()},"
                     f"2024-01-{i + 1:02d},{'x' if i % 2 == 0 else 'y'}")
    (root / "shots.csv").write_text("\n".join(lines) + "\n")
    store = root / "store"
    r = CliRunner().invoke(cli, ["embed", str(root / "shots.csv"), "--store", str(store), "--no-progress"])
    assert r.exit_code == 0, r.output
    return store, root, rel


def expected(root, rel):
    """The stored paths passing WHERE."""
    return {str(root / "imgs" / r) for i, r in enumerate(rel) if 50 * (i + 1) > 100 and i % 2 == 0}


def test_manifest_columns_are_typed(manifest_store):
    store, _, rel = manifest_store
    types = dict(query(store, "SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_name = 'item_meta'"))
    assert types == {"path": "VARCHAR", "iso": "BIGINT", "exposure": "DOUBLE", "flash": "BOOLEAN",
                     "shot_on": "DATE", "camera": "VARCHAR"}
    assert query(store, "SELECT count(*) FROM item_meta")[0][0] == len(rel)
    from featstore.store.schema import SCHEMA_VERSION
    assert query(store, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == str(SCHEMA_VERSION)


def test_where_on_metadata_through_the_cli(manifest_store, run):
    store, root, rel = manifest_store
    like = root / "imgs" / rel[0]
    out = json.loads(run("search", "--like", like, "-k", 20, "--where", WHERE, "--store", store, "--json").output)
    assert out["passing"] == 5
    assert {r["path"] for r in out["results"]} == expected(root, rel)
    for r in out["results"]:
        i = rel.index(r["path"].split("imgs/", 1)[1])
        assert r["meta"] == {"iso": 50 * (i + 1), "exposure": 0.25 * (i + 1), "flash": i % 3 == 0,
                             "shot_on": f"2024-01-{i + 1:02d}", "camera": "x"}
    plain = json.loads(run("search", "--like", like, "-k", 3, "--store", store, "--json").output)
    assert all(set(r["meta"]) == {"iso", "exposure", "flash", "shot_on", "camera"} for r in plain["results"])
    dated = json.loads(run("search", "--like", like, "-k", 20, "--where", "shot_on >= DATE '2024-01-10' AND flash",
                           "--store", store, "--json").output)
    assert {r["meta"]["shot_on"] for r in dated["results"]} == {"2024-01-10"}


def test_where_on_metadata_through_the_api(manifest_store):
    import featstore

    store, root, rel = manifest_store
    fs = featstore.open(store)
    for _ in range(8):         # from the 7th lookup on, results are described from the in-memory catalog
        res = fs.search(like=root / "imgs" / rel[0], k=20, where=WHERE)
        assert {r["path"] for r in res["results"]} == expected(root, rel)
        assert all(r["meta"]["camera"] == "x" and r["meta"]["iso"] > 100 for r in res["results"])
        plain = fs.search(like=root / "imgs" / rel[1], k=2)
        assert plain["results"][0]["meta"]["iso"] == 100
    frame = fs.to_pandas()
    assert {"iso", "exposure", "flash", "shot_on", "camera"} <= set(frame.columns)
    assert str(frame["iso"].dtype) == "int64" and str(frame["exposure"].dtype) == "float64"
    assert set(fs.items().query("iso > 100 and camera == 'x'")["path"]) == expected(root, rel)


def test_where_on_metadata_through_the_server(manifest_store):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    store, root, rel = manifest_store
    state = ServerState(store)
    try:
        with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as client:
            got = client.post("/search", json={"id": 1, "k": 20, "where": WHERE})
            assert got.status_code == 200, got.text
            assert {r["path"] for r in got.json()["results"]} <= expected(root, rel)
            assert all(r["meta"]["camera"] == "x" for r in got.json()["results"])
            items = client.get("/items", params={"where": WHERE}).json()
            assert items["total"] == 5 and {r["path"] for r in items["items"]} == expected(root, rel)
            assert all(r["iso"] > 100 and r["shot_on"].startswith("2024-01-") for r in items["items"])
            assert client.get("/items/1").json()["meta"]["iso"] == 50
            for hostile in ("iso > 1 OR secret = 'x'", "iso > (SELECT 1)", "item_meta.iso > 1"):
                bad = client.get("/items", params={"where": hostile})
                assert bad.status_code == 400 and bad.json()["error"].startswith("where: "), bad.text
                assert client.post("/search", json={"id": 1, "where": hostile}).status_code == 400
    finally:
        state.close()


def test_unknown_column_is_still_refused(manifest_store, run):
    import featstore
    from featstore.errors import FeatstoreError
    from featstore.store.where_guard import check_where

    store, root, rel = manifest_store
    r = run("search", "--like", root / "imgs" / rel[0], "--where", "secret = 1 OR iso > 0", "--store", store, ok=False)
    assert r.exit_code != 0 and "'secret' is not an item column" in r.output
    assert len(r.output.strip().splitlines()) == 1
    with pytest.raises(FeatstoreError, match="'iso' is not an item column"):
        check_where("iso > 1")                        # no store columns given: the fixed list only
    with pytest.raises(FeatstoreError, match="cannot be a metadata column"):
        check_where("x > 1", extra_columns=["x; DROP TABLE items"])
    with pytest.raises(FeatstoreError, match="not an item column"):
        featstore.open(store).search(ids=1, where="path IS NOT NULL AND nope > 1")


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory, home):
    """A folder of real photos embedded (no metadata); (store, folder, relative paths)."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("metafolder")
    rel = _copy_images(root / "photos", per_class=4)
    store = root / "store"
    r = CliRunner().invoke(cli, ["embed", str(root / "photos"), "--store", str(store), "--no-progress"])
    assert r.exit_code == 0, r.output
    return store, root, rel


def test_meta_csv_on_a_folder_store(folder_store, run, tmp_path):
    import featstore

    store, root, rel = folder_store
    before = json.loads(run("search", "--id", 1, "-k", 3, "--store", store, "--json").output)
    assert all(set(r) == {"rank", "score", "item_id", "path", "copies", "label", "hash", "text"}
               for r in before["results"])          # no metadata: the JSON as before
    assert list(featstore.open(store).items().columns) == ["item_id", "path", "hash", "size", "mtime", "width",
                                                           "height", "updated_at", "label", "split", "text"]
    table = root / "meta.csv"
    rows = [f"photos/{r},{i * 100},{'x' if i < 4 else 'y'}" for i, r in enumerate(rel)]
    table.write_text("path,ISO,camera\n" + "\n".join(rows) + "\nphotos/missing.jpg,1,z\n")
    out = json.loads(run("meta", "--csv", table, "--store", store, "--json").output)
    assert out["matched_paths"] == len(rel) and out["rows"] == len(rel) + 1
    assert out["columns"] == {"iso": "integer", "camera": "text"} and out["new_columns"] == ["iso", "camera"]
    assert [u["path"] for u in out["unmatched"]] == ["photos/missing.jpg"]
    human = run("meta", "--csv", table, "--store", store).output
    assert "metadata for 8 paths from 9 rows: iso (integer), camera (text); 1 rows not matched" in human
    found = json.loads(run("search", "--id", 1, "-k", 10, "--where", WHERE, "--store", store, "--json").output)
    assert {r["path"] for r in found["results"]} == {str(root / "photos" / r) for r in rel[2:4]}
    assert [r["meta"]["camera"] for r in found["results"]] == ["x", "x"]
    more = tmp_path / "more.jsonl"          # another file, another format: a new column beside the kept ones
    more.write_text(json.dumps({"path": str(root / "photos" / rel[0]), "rating": 4.5}) + "\n")
    added = featstore.open(store).meta(more)
    assert added["new_columns"] == ["rating"] and added["columns"] == {"rating": "number"}
    frame = featstore.open(store).to_pandas()
    assert list(frame.columns[-4:]) == ["iso", "camera", "rating", "vector"]
    assert frame.loc[frame["path"] == str(root / "photos" / rel[0]), "rating"].item() == 4.5


@pytest.mark.parametrize("header, value, message", [
    ("path,width", "3", "column 'width' clashes with an item column; rename it"),
    ("path,label", "a", "clashes with an item column; rename it (labels go in with `featstore label --csv`)"),
    ("path,Focal Length", "3", "column 'Focal Length' is not a usable metadata name"),
    ("path,select", "3", "column 'select' is an SQL keyword"),
    ("path,iso", "high", "column 'iso' is stored as integer, but this file holds text values in it"),
])
def test_bad_columns_are_one_line_errors(folder_store, run, tmp_path, header, value, message):
    store, root, rel = folder_store
    run("meta", "--csv", _table(tmp_path, "first.csv", "path,iso", root, rel, "1"), "--store", store)
    r = run("meta", "--csv", _table(tmp_path, "bad.csv", header, root, rel, value), "--store", store, ok=False)
    assert r.exit_code != 0 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error: ")


def test_bad_manifest_column_is_refused_before_the_store(run, tmp_path):
    rel = _copy_images(tmp_path / "imgs", per_class=1)
    (tmp_path / "m.csv").write_text("path,size\n" + "".join(f"imgs/{r},3\n" for r in rel))
    r = run("embed", tmp_path / "m.csv", "--store", tmp_path / "store", "--no-progress", ok=False)
    assert r.exit_code != 0 and "column 'size' clashes with an item column" in r.output
    assert not (tmp_path / "store" / "store.duckdb").exists()


def _table(folder, name, header, root, rel, value):
    path = folder / name
    path.write_text(header + "\n" + "".join(f"{root / 'photos' / r},{value}\n" for r in rel))
    return path
