"""The store's natural keys (an item's path, a label's task and path, a vector's content hash in its set) are kept
unique by featstore's writes rather than by DuckDB indexes (new stores hold none on them): a write that would
store a key twice is refused whole, naming the key, and leaves the store as it was; a store made before keeps its
DuckDB indexes and is written by the same code; `featstore verify` reports a key stored twice."""
import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import query
from test_bulk_write import _columns, _data, _items, _set, _vectors


def _unique_constraints(folder):
    return query(folder, "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                         "WHERE constraint_type IN ('UNIQUE', 'PRIMARY KEY') ORDER BY ALL")


def test_a_write_that_would_store_a_key_twice_is_refused_whole(tmp_path):
    from featstore.errors import FeatstoreError
    from featstore.store.db import Store

    folder = tmp_path / "s"
    paths, hashes, width, vecs = _data(5000)
    with Store.open(folder, write=True, create=True) as st:
        st.ensure_set(_set())
        st.write_batch(_set(), _columns(paths[:3000], hashes[:3000], width[:3000]), hashes[:3000], vecs[:3000])
        st.set_labels("t", {p: "a" for p in paths[:3000]})
    before = _items(folder), _vectors(folder)[0]
    rest = slice(3000, 5000)
    with Store.open(folder, write=True) as st:
        twice_path = _columns(paths[rest], hashes[rest], width[rest])
        twice_path["path"] = list(twice_path["path"])
        twice_path["path"][5] = twice_path["path"][9]
        with pytest.raises(FeatstoreError, match=f"items: {paths[3009]} appears more than once in one write"):
            st.write_batch(_set(), twice_path, hashes[rest], vecs[rest])
        stored_hash = hashes[3000:4999] + [hashes[17]]                # one content the set holds already
        with pytest.raises(FeatstoreError, match=f"content {hashes[17]} is already stored"):
            st.write_batch(_set(), _columns(paths[rest], stored_hash, width[rest]), stored_hash, vecs[rest])
        twice_hash = hashes[3000:4999] + [hashes[3000]]
        with pytest.raises(FeatstoreError, match=f"content {hashes[3000]} is twice in one write"):
            st.write_batch(_set(), _columns(paths[rest], twice_hash, width[rest]), twice_hash, vecs[rest])
    assert (_items(folder), _vectors(folder)[0]) == before                 # each refused write left nothing
    with Store.open(folder, write=True) as st:                                  # the right write then goes in
        st.write_batch(_set(), _columns(paths[rest], hashes[rest], width[rest]), hashes[rest], vecs[rest])
    assert len(_items(folder)) == 5000 and np.array_equal(_vectors(folder)[1], vecs)
    keyed = {(t, tuple(c)) for t, c in _unique_constraints(folder)}
    assert ("items", ("item_id",)) in keyed and ("vectors_b", ("vec_id",)) in keyed        # integer keys stay
    assert not {("items", ("path",)), ("labels", ("task", "path")), ("vectors_b", ("hash",))} & keyed


def test_curation_relabels_in_place_and_verify_finds_a_key_stored_twice(tmp_path):
    import featstore
    from cli.main import cli
    from featstore.store.db import Store

    folder = tmp_path / "s"
    paths, hashes, width, vecs = _data(50)
    with Store.open(folder, write=True, create=True) as st:
        st.ensure_set(_set())
        st.write_batch(_set(), _columns(paths, hashes, width), hashes, vecs)
        st.set_labels("t", {p: "a" for p in paths})
    fs = featstore.open(folder)
    fs.set_labels("t", paths[:5], "b")                           # a curation edit over stored labels
    fs.set_labels("t", paths[:2], "c")
    labels = dict(query(folder, "SELECT path, label FROM labels WHERE task = 't'"))
    assert len(labels) == 50 and [labels[p] for p in paths[:6]] == ["c", "c", "b", "b", "b", "a"]
    ok = CliRunner().invoke(cli, ["verify", "--store", str(folder), "--json"])
    assert ok.exit_code == 0, ok.output
    con = duckdb.connect(str(folder / "store.duckdb"))        # a row written around featstore
    con.execute("INSERT INTO labels VALUES ('t', ?, 'z')", [paths[3]])
    con.close()
    bad = CliRunner().invoke(cli, ["verify", "--store", str(folder)])
    assert bad.exit_code == 1
    assert f"stored 2 times in labels: t / {paths[3]}" in bad.output and "problems found" in bad.output


OLD_TABLES = """
DROP TABLE items; DROP TABLE labels; DROP TABLE vectors_b;
CREATE TABLE items (item_id BIGINT PRIMARY KEY DEFAULT nextval('item_ids'), path VARCHAR NOT NULL UNIQUE,
    hash VARCHAR, size BIGINT, mtime DOUBLE, width INTEGER, height INTEGER, status VARCHAR NOT NULL, error VARCHAR,
    updated_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE labels (task VARCHAR NOT NULL, path VARCHAR NOT NULL, label VARCHAR NOT NULL, PRIMARY KEY (task, path));
CREATE TABLE vectors_b (vec_id BIGINT PRIMARY KEY, hash VARCHAR NOT NULL UNIQUE, vector FLOAT[16] NOT NULL);
UPDATE meta SET value = '6' WHERE key = 'schema_version';
"""


def test_a_store_from_before_keeps_its_indexes_and_is_written_the_same(tmp_path):
    """Schema 6 stores have DuckDB UNIQUE indexes on the keys: writes, rewrites and relabels work on them as on a
    new store, they migrate to 7 on write and keep the indexes."""
    from featstore.errors import FeatstoreError
    from featstore.store.db import Store
    from featstore.store.schema import SCHEMA_VERSION

    results = {}
    paths, hashes, width, vecs = _data(3000)
    for name in ("old", "new"):
        folder = tmp_path / name
        with Store.open(folder, write=True, create=True) as st:
            st.ensure_set(_set())
        if name == "old":
            con = duckdb.connect(str(folder / "store.duckdb"))
            con.execute(OLD_TABLES)
            con.close()
        with Store.open(folder, write=True) as st:
            st.write_batch(_set(), _columns(paths, hashes, width), hashes, vecs)
            st.set_labels("t", {p: "a" for p in paths[:2000]})
            st.set_labels("t", {p: "b" for p in paths[1000:]})
            again = _columns(paths[:10], hashes[:10], width[:10])
            again["status"] = ["failed"] * 10
            st.write_batch(_set(), again, [], None)
            with pytest.raises(FeatstoreError, match="already stored"):
                st.write_batch(_set(), _columns(paths[:1], hashes[:1], width[:1]), hashes[:1], vecs[:1])
        results[name] = ([r[1:] for r in _items(folder)], query(folder, "SELECT * FROM labels ORDER BY ALL"),
                         _vectors(folder)[0])
        assert query(folder, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert results["old"] == results["new"] and len(results["new"][1]) == 3000
    assert sum(s == "failed" for *_, s, _ in results["new"][0]) == 10
    kept = _unique_constraints(tmp_path / "old")
    assert ("items", ["path"]) in kept and ("labels", ["task", "path"]) in kept and ("vectors_b", ["hash"]) in kept
    assert not {("items", ("path",)), ("labels", ("task", "path")), ("vectors_b", ("hash",))} & {
        (t, tuple(c)) for t, c in _unique_constraints(tmp_path / "new")}
