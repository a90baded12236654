"""The store's bulk write path: item rows given as columns store the same as rows given as dicts, a bulk write's
vectors are stored uncompressed (and read back bit for bit), relabelling and re-writing existing rows still
replace them, and a writer killed inside a bulk write keeps every earlier commit."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import query

DIM = 16
N = 5000          # > BULK_VECTORS: a bulk write


def _set():
    from featstore.store.schema import EmbeddingSet

    return EmbeddingSet("b", "b", DIM, "vectors_b", "-", "-", {}, "fp32", "cpu")


def _data(n=N, start=0, seed=0):
    rng = np.random.default_rng(seed)
    idx = range(start, start + n)
    paths = [f"/bulk/{i % 7}/img{i}.jpg" for i in idx]
    hashes = [f"{i:032x}" for i in idx]
    width = rng.integers(1, 5000, n).astype(np.int32)
    return paths, hashes, width, rng.standard_normal((n, DIM)).astype(np.float32)


def _rows(paths, hashes, width):
    return [{"path": p, "hash": h, "size": 10, "mtime": 1.5, "width": None if w is None else int(w), "height": 3,
             "status": "ok", "error": None} for p, h, w in zip(paths, hashes, width)]


def _columns(paths, hashes, width):
    n = len(paths)
    return {"path": paths, "hash": hashes, "size": np.full(n, 10, np.int64), "mtime": np.full(n, 1.5),
            "width": width, "height": np.full(n, 3, np.int32), "status": ["ok"] * n}


def _items(folder):
    return query(folder, "SELECT item_id, path, hash, size, mtime, width, height, status, error FROM items "
                         "ORDER BY item_id")


def _vectors(folder):
    rows = query(folder, "SELECT vec_id, hash, vector FROM vectors_b ORDER BY vec_id")
    return [r[:2] for r in rows], np.array([r[2] for r in rows], np.float32)


def test_columns_store_the_same_as_rows_and_bulk_vectors_are_uncompressed(tmp_path):
    from featstore.store.db import BULK_VECTORS, Store

    assert N >= BULK_VECTORS
    paths, hashes, width, vecs = _data()
    small = _data(100, start=N, seed=1)
    for name, items in (("rows", _rows), ("columns", _columns)):
        with Store.open(tmp_path / name, write=True, create=True) as st:
            st.ensure_set(_set())
            default = st.con.execute("SELECT current_setting('force_compression')").fetchone()[0]
            st.write_batch(_set(), items(paths, hashes, width), hashes, vecs)
            st.write_batch(_set(), items(*small[:3]), small[1], small[3])       # a small write: compressed
            after = st.con.execute("SELECT current_setting('force_compression')").fetchone()[0]
        assert after == default
    assert _items(tmp_path / "rows") == _items(tmp_path / "columns") and len(_items(tmp_path / "rows")) == N + 100
    ids, got = _vectors(tmp_path / "columns")
    assert ids == [(i + 1, h) for i, h in enumerate(hashes + small[1])]
    assert np.array_equal(got, np.concatenate([vecs, small[3]]))              # bit for bit
    kinds = query(tmp_path / "columns", "SELECT DISTINCT compression FROM pragma_storage_info('vectors_b') "
                                        "WHERE segment_type = 'FLOAT' AND row_group_id = 0")
    assert kinds == [("Uncompressed",)]


def test_item_columns_reject_unknown_or_ragged_columns(tmp_path):
    from featstore.errors import FeatstoreError
    from featstore.store.db import Store

    paths, hashes, width, vecs = _data(10)
    with Store.open(tmp_path / "s", write=True, create=True) as st:
        st.ensure_set(_set())
        with pytest.raises(FeatstoreError, match="colour unknown"):
            st.write_batch(_set(), {"path": paths, "colour": ["red"] * 10}, hashes, vecs)
        with pytest.raises(FeatstoreError, match="different lengths"):
            st.write_batch(_set(), {"path": paths, "hash": hashes[:3]}, hashes, vecs)
    assert _items(tmp_path / "s") == [] and _vectors(tmp_path / "s")[0] == []          # nothing half-written


def test_rewriting_items_and_labels_replaces_them(tmp_path):
    """The first write of new paths is a plain insert; a later one over stored paths updates them (status, hash,
    width), and relabelling replaces labels while adding new ones."""
    from featstore.store.db import Store

    paths, hashes, width, vecs = _data(3000)
    with Store.open(tmp_path / "s", write=True, create=True) as st:
        st.ensure_set(_set())
        st.write_batch(_set(), _columns(paths, hashes, width), hashes, vecs)
        st.set_labels("t", {p: "a" for p in paths[:2000]})
        changed = _rows(paths[:10], [None] * 10, [None] * 10)
        for r in changed:
            r.update(status="failed", error="truncated")
        st.write_batch(_set(), changed + _rows(["/bulk/new.jpg"], [hashes[0]], [7]), [], None)
        st.set_labels("t", {p: "b" for p in paths[1000:3000]})
    items = {r[1]: r for r in _items(tmp_path / "s")}
    assert len(items) == 3001
    assert items[paths[0]][2:] == (None, 10, 1.5, None, 3, "failed", "truncated")
    assert items[paths[10]][7] == "ok" and items["/bulk/new.jpg"][5] == 7
    labels = dict(query(tmp_path / "s", "SELECT path, label FROM labels WHERE task = 't'"))
    assert len(labels) == 3000 and labels[paths[0]] == "a" and labels[paths[1000]] == "b" == labels[paths[2999]]


def test_a_writer_killed_inside_a_bulk_write_keeps_earlier_commits(tmp_path):
    """A process that commits one bulk write, then dies (os._exit, no cleanup) after the next one's vectors are
    inserted but before its commit: the store reopens with exactly the first write, and writing the second again
    succeeds (what a rerun of an embed does)."""
    from featstore.store.db import Store

    folder = tmp_path / "s"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np
        from featstore.store.db import Store
        from test_bulk_write import _columns, _data, _set
        first, second = _data(), _data(start={N}, seed=1)
        with Store.open({str(folder)!r}, write=True, create=True) as st:
            st.ensure_set(_set())
            st.write_batch(_set(), _columns(*first[:3]), first[1], first[3])
            def die(*a, **k):
                os._exit(3)
            st._upsert_item_columns = die
            st.write_batch(_set(), _columns(*second[:3]), second[1], second[3])
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 3, p.stderr
    first, second = _data(), _data(start=N, seed=1)
    assert len(_items(folder)) == N
    ids, got = _vectors(folder)
    assert [h for _, h in ids] == first[1] and np.array_equal(got, first[3])
    with Store.open(folder, write=True) as st:
        st.write_batch(_set(), _columns(*second[:3]), second[1], second[3])
    ids, got = _vectors(folder)
    assert len(_items(folder)) == 2 * N and np.array_equal(got, np.concatenate([first[3], second[3]]))
    assert [i for i, _ in ids] == list(range(1, 2 * N + 1))
