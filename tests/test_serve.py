"""featstore serve: the REST API through the ASGI test client on a real store (sample photos + BBC texts, a real
head), the --where confinement, uploads, path traversal, the snapshot while an embed writes, a bounded load."""
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import SAMPLE, sample_images  # noqa: E402
from serve_helpers import LiveServer, build_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    return build_store(tmp_path_factory)


@pytest.fixture(scope="module")
def state(store):
    from featstore.serve.state import ServerState

    st = ServerState(store)
    yield st
    st.close()


@pytest.fixture(scope="module")
def client(state):
    from featstore.serve.app import create_app

    with TestClient(create_app(state), base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as c:
        yield c


def rose():
    return sorted((SAMPLE / "roses").glob("*.jpg"))[0]


def test_openapi_schema_and_page(client):
    schema = client.get("/openapi.json").json()
    assert {"/items", "/items/{item_id}", "/search", "/predict", "/heads", "/stats"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "search-text" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_stats_and_heads(client, store):
    s = client.get("/stats").json()
    assert s["store"] == str(store) and s["items"]["ok"] == 100 + 15 and set(s["tasks"]) == {"flowers", "news"}
    assert [h["name"] for h in client.get("/heads").json()] == ["fl"]


def test_items_paged_and_filtered(client):
    page = client.get("/items", params={"task": "flowers", "where": "label = 'roses'", "limit": 7}).json()
    assert page["total"] == 20 and len(page["items"]) == 7 and all(i["label"] == "roses" for i in page["items"])
    nxt = client.get("/items", params={"task": "flowers", "where": "label = 'roses'", "limit": 7, "offset": 7}).json()
    assert {i["item_id"] for i in nxt["items"]}.isdisjoint(i["item_id"] for i in page["items"])
    assert client.get("/items", params={"task": "flowers"}).json()["total"] == 115      # texts are items too
    bad = client.get("/items", params={"task": "nope"})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


def test_item_and_thumbnail_cached_with_headers(client, store):
    item = client.get("/items", params={"task": "flowers", "where": "label = 'tulips'", "limit": 1}).json()["items"][0]
    one = client.get(f"/items/{item['item_id']}").json()
    assert one["labels"] == {"flowers": "tulips"} and one["thumbnail"] == f"/items/{item['item_id']}/thumbnail"
    r = client.get(one["thumbnail"], params={"size": 128})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
    from PIL import Image

    assert max(Image.open(io.BytesIO(r.content)).size) == 128
    assert list((store / "thumbs").rglob(f"{one['hash']}-128.jpg"))       # cached in the store folder
    again = client.get(one["thumbnail"], params={"size": 128}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/items/999999").status_code == 404 and "error" in client.get("/items/999999").json()


def test_search_by_uploaded_image_text_and_id(client, store):
    with open(rose(), "rb") as f:
        r = client.post("/search", files={"file": ("query.jpg", f, "image/jpeg")}, data={"k": "5",
                        "task": "flowers"})
    out = r.json()
    assert r.status_code == 200 and out["query"] == "query.jpg" and len(out["results"]) == 5
    assert out["results"][0]["path"].endswith(rose().name) and out["results"][0]["label"] == "roses"
    text = client.post("/search", json={"text": "election and the prime minister", "k": 3, "task": "news"}).json()
    assert text["model"] == "all-minilm-l6-v2" and len(text["results"]) == 3 and all(x["text"] for x in text["results"])
    by_id = client.post("/search", json={"id": out["results"][1]["item_id"], "k": 4, "task": "flowers"}).json()
    assert len(by_id["results"]) == 4 and out["results"][1]["item_id"] not in [x["item_id"] for x in by_id["results"]]
    filt = client.post("/search", json={"id": out["results"][1]["item_id"], "k": 4, "task": "flowers",
                                        "where": "label = 'daisy'"}).json()
    assert filt["results"] and all(x["label"] == "daisy" for x in filt["results"])
    from conftest import query

    assert query(store, "SELECT count(*) FROM items")[0][0] == 115        # the upload was not stored


def test_predict_uploaded_images_stores_nothing(client, store, tmp_path):
    files = sample_images(1)[:3]
    handles = [open(p, "rb") for p in files]
    try:
        r = client.post("/predict", data={"head": "fl"},
                        files=[("file", (p.name, h, "image/jpeg")) for p, h in zip(files, handles)])
    finally:
        [h.close() for h in handles]
    out = r.json()
    assert r.status_code == 200 and [p["path"] for p in out["predictions"]] == [p.name for p in files]
    assert [p["label"] for p in out["predictions"]] == [p.parent.name for p in files]
    bad = client.post("/predict", data={"head": "nope"}, files={"file": ("a.jpg", open(files[0], "rb"), "image/jpeg")})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


def test_uploads_over_the_limit_or_not_images_are_refused(client, monkeypatch):
    from featstore.serve import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 50_000)
    big = client.post("/search", files={"file": ("big.jpg", b"\xff\xd8" + b"0" * 60_000, "image/jpeg")})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    text = client.post("/search", files={"file": ("notes.jpg", b"just some text, not an image", "image/jpeg")})
    assert text.status_code == 415 and "not an image" in text.json()["error"]
    from featstore.serve import app as app_module

    monkeypatch.setattr(app_module, "MAX_REQUEST_BYTES", 1000)
    huge = client.post("/search", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_where_allows_plain_conditions_and_strings_holding_keywords(client):
    r = client.get("/items", params={"task": "news", "where": "text ILIKE '%select from; drop%' OR lower(label) = 'tech'"})
    assert r.status_code == 200 and r.json()["total"] == 3
    err = client.get("/items", params={"where": "no_such_column = 1", "task": "news"})
    assert err.status_code == 400 and err.json()["error"].startswith("where:") and "Traceback" not in err.text


def test_served_search_matches_the_search_on_the_store(store, tmp_path):
    """The server describes results from its snapshot's in-memory catalog; what it answers equals featstore's
    own search on the store (DuckDB) for every stored item, a text and an uploaded image, in every task, with
    copies of one content (the first path by name stands for it), a removed item, and a --where."""
    import shutil

    from featstore.errors import FeatstoreError
    from featstore.search.query import Query, search_many
    from featstore.serve.state import ServerState
    from featstore.store.db import Store
    from featstore.store.vanished import REMOVED

    store = shutil.copytree(store, tmp_path / "store")
    with Store.open(store, write=True) as st:
        rows = st.con.execute("SELECT path, hash, size, mtime, width, height FROM items WHERE status = 'ok' "
                              "AND hash NOT IN (SELECT hash FROM texts) ORDER BY item_id LIMIT 6").fetchall()
        copies = [{"path": f"/copies/{'a' if i % 2 else 'z'}{i}.jpg", "hash": h, "size": size, "mtime": mtime,
                   "width": w, "height": ht, "status": "ok", "error": None}
                  for i, (_, h, size, mtime, w, ht) in enumerate(rows)]
        st.con.execute("UPDATE items SET status = ? WHERE path = ?", [REMOVED, rows[0][0]])
        st.write_batch(st.pick_set("efficientnet-lite0"), copies, [], None)
        st.set_labels("flowers", {c["path"]: "copied" for c in copies[:3]})
        st.set_labels("other", {path: "x" for path, *_ in rows[::2]})
        item_ids = [r[0] for r in st.con.execute("SELECT item_id FROM items ORDER BY item_id").fetchall()]

    def answer(st, query, task, k, where, indexes):
        try:
            return search_many(st, [query], k=k, task=task, where=where, backbones=state.backbones,
                               indexes=indexes)[0]
        except FeatstoreError as exc:
            return str(exc)

    state = ServerState(store, refresh=False)
    try:
        queries = [Query("id", i) for i in item_ids] + [Query("text", "election and the prime minister"),
                                                         Query("file", str(rose()))]
        asked = [(q, task, 50, None) for q in queries for task in ("flowers", "news", "other")]
        asked += [(q, "flowers", 3, "label = 'roses' OR path LIKE '/copies/%'") for q in queries[:20]]
        with Store.open(store) as plain:
            plain_indexes = {}
            for query, task, k, where in asked:
                with state.reading() as (served, snap):
                    got = answer(served, query, task, k, where, snap.indexes)
                assert got == answer(plain, query, task, k, where, plain_indexes), (query, task, where)
        with state.reading() as (served, _):
            described = served.describe_vecs(served.pick_set("efficientnet-lite0"),
                                             served.vec_ids_for_hashes(served.pick_set("efficientnet-lite0"),
                                                                       [h for _, h, *_ in rows]).values(), "flowers")
        assert sorted(d["copies"] for d in described.values()) == [1, 2, 2, 2, 2, 2]     # one original removed
        live = [[c["path"]] + ([path] if i else []) for i, ((path, *_), c) in enumerate(zip(rows, copies))]
        assert {d["path"] for d in described.values()} == {min(paths) for paths in live}     # first by path
    finally:
        state.close()


def test_the_snapshot_connection_refuses_file_access(state):
    import duckdb

    with state.reading() as (store, _):
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            store.con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error):
            store.con.execute("CREATE TABLE x (a INT)")


def test_path_traversal_refused(client):
    for url in ("/static/../../store.duckdb", "/static/..%2F..%2Fstore.duckdb", "/items/..%2Fstore.duckdb",
                "/items/1%2F..%2F..%2Fetc%2Fpasswd/thumbnail", "/items/../store.duckdb/thumbnail"):
        r = client.get(url)
        assert r.status_code in (404, 422) and "error" in r.json() and "SQLite" not in r.text, url
    assert client.get("/items/1/thumbnail", params={"size": 4096}).status_code == 400


def knn_2d_accuracy(m, k=5):
    """How often a point's label is the majority of its k nearest points on the map (leave-one-out)."""
    import numpy as np

    xy, codes = np.c_[m["x"], m["y"]], np.array(m["codes"])
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    votes = codes[np.argsort(d, axis=1)[:, :k]]
    return float(np.mean([np.bincount(v).argmax() == c for v, c in zip(votes, codes)]))


def test_map_and_confusion(client, store):
    m = client.get("/map", params={"model": "efficientnet-lite0", "task": "flowers"}).json()
    assert m["n"] == 100 and len(m["x"]) == len(m["y"]) == len(m["codes"]) == 100
    assert set(m["classes"]) == {p.name for p in SAMPLE.iterdir() if p.is_dir()}
    assert all(0 <= v <= 1 for v in m["x"] + m["y"]) and min(m["codes"]) >= 0
    assert m["method"] == "tsne" and list((store / "maps").glob("*-tsne.npz"))      # computed once, stored
    pca = client.get("/map", params={"model": "efficientnet-lite0", "task": "flowers", "method": "pca"}).json()
    assert pca["ids"] == m["ids"] and list((store / "maps").glob("*-pca.npz"))
    print("map 5-NN label accuracy: t-SNE", knn_2d_accuracy(m), "PCA", knn_2d_accuracy(pca))
    assert knn_2d_accuracy(m) > knn_2d_accuracy(pca) + 0.1, (knn_2d_accuracy(m), knn_2d_accuracy(pca))
    assert client.get("/map", params={"method": "umap"}).status_code == 400
    by_head = client.get("/map", params={"model": "efficientnet-lite0", "color": "head:fl"}).json()
    assert by_head["classes"] == sorted(m["classes"]) and min(by_head["codes"]) >= 0
    c = client.get("/heads/fl/confusion").json()
    total = sum(map(sum, c["matrix"]))
    assert total == sum(len(v) for v in c["cells"].values()) > 0
    diag = sum(c["matrix"][i][i] for i in range(len(c["labels"])))
    assert diag / total > 0.7


def test_errors_are_json_without_traceback(client):
    for r in (client.post("/search", json={"k": 3}), client.post("/search", content=b"{not json",
                                                                  headers={"content-type": "application/json"}),
              client.post("/search", json={"text": "x", "k": 0}), client.get("/items", params={"limit": "many"}),
              client.post("/predict", json={"head": "fl", "texts": ["a"]})):
        assert 400 <= r.status_code < 500 and set(r.json()) == {"error"} and "Traceback" not in r.text


def listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in open(table).read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    out.append(local.rsplit(":", 1)[0])
    return out


def test_cli_serve_binds_localhost_only_and_cleans_up(store, home, tmp_path):
    """`featstore serve` as a user runs it: listening on 127.0.0.1 alone, answering, and on SIGTERM gone with its
    temporary snapshot removed."""
    import signal
    import urllib.request

    from featstore.cli.main import cli
    from serve_helpers import free_port

    params = {p.name: p.default for p in cli.commands["serve"].params}
    assert params["host"] == "127.0.0.1" and params["port"] == 8765
    port, tmp = free_port(), tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "featstore.cli.main", "serve", "--store", str(store), "--port",
                             str(port)], env=dict(os.environ, FEATSTORE_HOME=str(home), TMPDIR=str(tmp)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5))
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.3)
        assert stats["items"]["ok"] == 115
        assert listening(port) == ["0100007F"]                 # 127.0.0.1 only, not 0.0.0.0 or ::
        assert any(tmp.iterdir())                              # the snapshot lives in the temporary folder
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(tmp.iterdir()), list(tmp.iterdir())


def test_served_while_an_embed_writes_and_picks_up_the_new_items(store, tmp_path, home):
    """A bounded load (200 searches, 4 clients) against a live server while a second process embeds new photos
    into the same store: no failed request, the writer is never locked out, the new items appear afterwards,
    and the store verifies clean."""
    import shutil
    import urllib.request

    from featstore.serve.state import ServerState

    store = shutil.copytree(store, tmp_path / "store")

    extra = tmp_path / "more"
    for i, p in enumerate(sample_images(20)):     # 100 photos, 2 a transaction below: the embed commits for seconds,
                                                  # longer than the server's refresher takes to see it (1 s)
        (extra / p.parent.name).mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.open(p).rotate(90 + i, expand=True).save(extra / p.parent.name / f"r{i}.jpg")
    st = ServerState(store)
    server = LiveServer(st)
    photo = rose().read_bytes()
    before = json.load(urllib.request.urlopen(server.url + "/stats"))["items"]["ok"]

    seen_pending = []

    def one(i):
        seen_pending.append(st.pending)
        if i % 2:
            body, ctype = json.dumps({"id": 1 + i % 50, "k": 5, "task": "flowers"}).encode(), "application/json"
        else:
            b = "featstoreboundary"
            body = (f"--{b}\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\nflowers\r\n"
                    f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{b}--\r\n".encode()
            ctype = f"multipart/form-data; boundary={b}"
        req = urllib.request.Request(server.url + "/search", data=body, headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, len(json.load(r)["results"])

    env = dict(os.environ, FEATSTORE_HOME=str(home))
    writer = subprocess.Popen([sys.executable, "-m", "featstore.cli.main", "embed", str(extra), "--store", str(store),
                               "--task", "more", "--no-progress", "--wait", "--batch-size", "2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120        # the 200 searches take about a second: start them once the
        while not (st.pending and "being written" in st.pending) and writer.poll() is None:    # writer holds it
            assert time.monotonic() < deadline, "the embed never took the store"
            time.sleep(0.05)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(200)))
        out, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert results == [(200, 5 if i % 2 else 10) for i in range(200)]      # multipart: the default k, 10
    assert any(p and "being written" in p for p in seen_pending)          # the load ran while the embed wrote
    deadline = time.monotonic() + 30
    while json.load(urllib.request.urlopen(server.url + "/stats"))["items"]["ok"] == before:
        assert time.monotonic() < deadline, "the server never picked up the embed's items"
        time.sleep(0.5)
    assert json.load(urllib.request.urlopen(server.url + "/stats"))["items"]["ok"] == before + 100
    server.stop()
    st.close()
    import featstore

    assert featstore.open(store).verify()["ok"]
