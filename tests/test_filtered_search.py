"""Filtered kNN inside the index (search/filtered.py): the passing vec_ids as a FAISS selector in the set's own
index, probing as many lists as the selectivity needs. Recall@10 against the exact filtered answer at 50%, 10%,
1%, 0.1% and 0.01% of the vectors passing, for every index kind, on clustered vectors (fewer clusters than IVF
lists, so that probing matters); and the search through a store gives the exact answer on the sample."""
import numpy as np
import pytest

from conftest import SAMPLE, embed_into_new_store

N, DIM, K = 30_000, 32, 10
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001, 0.0001)


@pytest.fixture(scope="module")
def data():
    from featstore.store.index import normalise_rows

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, DIM)).astype(np.float32) * 2
    base = normalise_rows(centres[rng.integers(0, 40, N)] + rng.standard_normal((N, DIM)).astype(np.float32))
    ids = np.arange(1, N + 1, dtype=np.int64) * 3             # vec_ids are not positions
    queries = normalise_rows(centres[rng.integers(0, 40, 50)] + rng.standard_normal((50, DIM)).astype(np.float32))
    return base, ids, queries


def exact_filtered(base, ids, queries, passing_mask, k):
    scores = queries @ base[passing_mask].T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[passing_mask][top]


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got.tolist(), truth.tolist())]))


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-sq8", "ivf-pq", "hnsw"])
def test_recall_at_every_selectivity(data, kind):
    from featstore.search.filtered import filtered_topk
    from featstore.store.index_kinds import Vectors, build_tuned, set_param

    base, ids, queries = data
    index, record = build_tuned(kind, Vectors(ids, base), DIM, 0.95)
    set_param(index, kind, record["params"])
    by_id = {int(v): i for i, v in enumerate(ids)}

    def vectors_for(wanted):
        return base[[by_id[int(v)] for v in np.asarray(wanted, np.int64)]]

    rng = np.random.default_rng(1)
    for share in SELECTIVITIES:
        mask = np.zeros(N, bool)
        mask[rng.choice(N, max(1, int(N * share)), replace=False)] = True
        k = min(K, int(mask.sum()))
        truth = exact_filtered(base, ids, queries, mask, k)
        scores, got = filtered_topk(index, kind, queries, K, ids[mask], N, vectors_for)
        assert got.shape == (len(queries), k)
        assert set(got[got >= 0].tolist()) <= set(ids[mask].tolist())          # only passing vectors come back
        r = recall(got, truth)
        assert r >= 0.99, (kind, share, r, record["params"])
        assert np.all(np.diff(scores, axis=1) <= 1e-5)                         # best first


def test_a_search_with_where_through_the_store_is_exact(home, tmp_path_factory):
    """On the sample (flat index): the filtered search equals ranking the passing items' stored vectors."""
    import featstore
    from featstore.store.db import Store
    from featstore.store.index import normalise_rows

    store = embed_into_new_store(tmp_path_factory, "filtered")
    rose = str(sorted((SAMPLE / "roses").glob("*.jpg"))[0])
    fs = featstore.open(store)
    out = fs.search(like=rose, k=8, where="label IN ('roses', 'daisy') AND width > 200")
    with Store.open(store) as st:
        s = st.pick_set(None)
        rows = st.con.execute(f"""SELECT i.item_id, e.vector FROM items i JOIN labels l ON l.path = i.path
                                  JOIN {s.table} e ON e.hash = i.hash WHERE l.label IN ('roses', 'daisy')
                                  AND i.width > 200 AND i.status = 'ok'""").fetchall()
        from featstore.hashing import content_hash

        q = st.vectors_for_hashes(s, [content_hash(open(rose, "rb").read())])
    ids = np.array([r[0] for r in rows])
    vecs = normalise_rows(np.array([r[1] for r in rows], np.float32))
    query_vec = normalise_rows(np.asarray(next(iter(q.values())), np.float32)[None])[0]
    want = ids[np.argsort(-(vecs @ query_vec), kind="stable")[:8]]
    assert [r["item_id"] for r in out["results"]] == want.tolist()
    assert out["passing"] == len(rows)


def test_a_ready_made_vector_is_a_query_through_every_door(home, tmp_path_factory, tmp_path):
    """fs.search(vector=...), search --vector-file q.npy and POST /search {"vector": [...]} rank the store by the
    vector given: a stored item's own vector finds that item first; the dimension is checked against the set,
    and a wrong one, a non-finite one or a pickled file is one line."""
    import json

    import featstore
    from conftest import cli_runner
    from featstore.errors import FeatstoreError
    from featstore.store.db import Store

    store = embed_into_new_store(tmp_path_factory, "vectors")
    with Store.open(store) as st:
        s = st.pick_set(None)
        item = st.item(7)
        vec = st.vectors_for_hashes(s, [item.hash])[item.hash]
    fs = featstore.open(store)
    out = fs.search(vector=vec, k=3)
    assert out["results"][0]["item_id"] == 7 and out["results"][0]["score"] > 0.9999 and out["set_id"] == s.set_id
    two = fs.search(vector=np.stack([vec, vec]), k=2)
    assert len(two) == 2 and all(o["results"][0]["item_id"] == 7 for o in two)
    for bad, why in ((vec[:100], "no embedding set holds vectors of 100"), (np.full(len(vec), np.nan), "finite"),
                     (np.zeros((2, 2, 2)), "one row")):
        with pytest.raises(FeatstoreError, match=why):
            fs.search(vector=bad, k=3)
    with pytest.raises(FeatstoreError, match="holds vectors of"):
        fs.search(vector=vec[:100], k=3, model=s.set_id)

    np.save(tmp_path / "q.npy", vec)
    run = cli_runner()
    r = run("search", "--vector-file", tmp_path / "q.npy", "-k", "2", "--store", store, "--json")
    assert json.loads(r.stdout)["results"][0]["item_id"] == 7
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bad = run("search", "--vector-file", tmp_path / "obj.npy", "--store", store, ok=False)
    assert bad.exit_code == 1 and "not a .npy array of numbers" in bad.output

    from fastapi.testclient import TestClient

    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(store, refresh=False)
    try:
        with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as c:
            got = c.post("/search", json={"vector": vec.tolist(), "k": 2})
            assert got.status_code == 200 and got.json()["results"][0]["item_id"] == 7
            assert c.post("/search", json={"vector": vec[:10].tolist()}).status_code == 400
            assert c.post("/search", json={"vector": ["a"]}).status_code in (400, 422)
            assert c.post("/search", json={"vector": vec.tolist(), "id": 3}).status_code == 400
    finally:
        state.close()


def test_the_server_refines_a_compressed_index_as_the_store_does(home, tmp_path):
    """The server's snapshot holds no index stamps of its own: it takes each set's index kind from the store, so
    an IVF-PQ set's candidates are re-scored on the stored vectors there too and it answers as featstore.open."""
    import featstore
    from featstore.search.query import Query, search_many
    from featstore.serve.state import ServerState
    from serve_helpers import synthetic_store

    root = synthetic_store(tmp_path / "store", 6000, dim=32)
    fs = featstore.open(root)
    fs.build_index(kind="ivf-pq")
    state = ServerState(root, refresh=False)
    try:
        for item_id in (3, 500, 4321):
            plain = fs.search(ids=item_id, k=10, task="synthetic")
            with state.reading() as (served, snap):
                got = search_many(served, [Query("id", item_id)], k=10, task="synthetic",
                                  indexes=snap.indexes)[0]
            assert [r["item_id"] for r in got["results"]] == [r["item_id"] for r in plain["results"]]
            assert [r["score"] for r in got["results"]] == [r["score"] for r in plain["results"]]
    finally:
        state.close()
