"""The web app's gallery API (GET /grid, /grid/ids, /items/{id}/view) and the map's colouring, through the ASGI
test client on a real store: the sample photos (task flowers, a logreg head), a few BBC articles, a numeric task
and a metadata column attached through the CLI. Counts are checked against what the store itself says."""
import csv

import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from serve_helpers import build_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    from featstore.cli.main import cli

    root = build_store(tmp_path_factory)
    paths = sorted(p for p in _paths(root) if p.endswith(".jpg"))
    work = tmp_path_factory.mktemp("extra")
    with open(work / "age.csv", "w", newline="") as f:        # a numeric task: 50 distinct values
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for i, p in enumerate(paths):
            w.writerow([p, str(i % 50)])
    with open(work / "meta.csv", "w", newline="") as f:       # a metadata column: camera A/B
        w = csv.writer(f)
        w.writerow(["path", "camera"])
        for i, p in enumerate(paths):
            w.writerow([p, "A" if i % 4 else "B"])
    for args in (["label", "--task", "age", "--csv", str(work / "age.csv")], ["meta", "--csv", str(work / "meta.csv")]):
        r = CliRunner().invoke(cli, [*args, "--store", str(root)])
        assert r.exit_code == 0, r.output
    return root


def _paths(root):
    from featstore.store.db import Store

    with Store.open(root) as st:
        return {p: it for p, it in st.items_by_path().items() if it.status == "ok"}


@pytest.fixture(scope="module")
def client(store):
    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(store)
    with TestClient(create_app(state), base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as c:
        yield c
    state.close()


def grid(client, **params):
    r = client.get("/grid", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_pages_cover_every_item_once_in_id_order(client):
    first = grid(client, limit=40)
    assert first["total"] == 115 and len(first["items"]) == 40         # 100 photos + 15 texts
    seen = []
    for offset in range(0, 115, 40):
        seen += [it["item_id"] for it in grid(client, offset=offset, limit=40, counts="false")["items"]]
    assert seen == sorted(seen) and len(set(seen)) == 115
    assert client.get("/grid/ids").json()["ids"] == seen
    texts = [it for it in grid(client, offset=100, limit=40)["items"] if "text" in it]
    assert len(texts) == 15 and all(t["text"] for t in texts)


def test_label_split_filters_and_counts_agree_with_the_store(client, store):
    from featstore.store.db import Store

    with Store.open(store) as st:
        truth = dict(st.con.execute("SELECT label, count(*) FROM labels WHERE task = 'flowers' GROUP BY label")
                     .fetchall())
        split = dict(st.con.execute("SELECT split, count(*) FROM splits WHERE task = 'flowers' GROUP BY split")
                     .fetchall())
    out = grid(client, task="flowers")
    assert out["counts"]["label"] == truth | {"(none)": 15}
    assert sum(out["counts"]["split"].get(k, 0) for k in ("train", "test")) == sum(split.values())
    roses = grid(client, task="flowers", label="roses")
    assert roses["total"] == truth["roses"] and all(it["label"] == "roses" for it in roses["items"])
    assert roses["counts"]["label"] == out["counts"]["label"]            # a filter's own counts ignore it
    both = grid(client, task="flowers", label=["roses", "tulips"], split="test")
    assert both["total"] == both["counts"]["label"]["roses"] + both["counts"]["label"]["tulips"]
    assert all(it["split"] == "test" and it["label"] in ("roses", "tulips") for it in both["items"])
    unl = grid(client, task="flowers", status="unlabelled")
    assert unl["total"] == 15 and all(it["label"] is None for it in unl["items"])


def test_head_predictions_correct_wrong_and_confidence(client):
    conf = client.get("/heads/fl/confusion").json()
    wrong_cells = sum(len(v) for k, v in conf["cells"].items() if k.split("|")[0] != k.split("|")[1])
    out = grid(client, task="flowers", head="fl", split="test", correct="wrong", limit=500)
    assert out["total"] == wrong_cells
    for it in out["items"]:
        pred, p = it["preds"]["fl"]
        assert pred != it["label"] and 0 < p <= 1
    every = grid(client, task="flowers", head="fl", limit=500)
    preds = every["counts"]["pred"]
    assert preds.pop("(none)") == 15 and sum(preds.values()) == 100      # texts have no vector of the image set
    assert set(preds) <= set(conf["labels"])
    sure = grid(client, head="fl", conf_min=0.9, limit=500)
    assert all(it["preds"]["fl"][1] >= 0.9 for it in sure["items"])
    unsure = grid(client, head="fl", conf_max=0.9, limit=500)
    assert sure["total"] + unsure["total"] >= 100
    order = [it["preds"]["fl"][1] for it in grid(client, head="fl", sort="conf", limit=100)["items"]]
    assert order == sorted(order)
    roses = grid(client, task="flowers", head="fl", pred="roses", limit=500)
    assert roses["total"] == every["counts"]["pred"]["roses"]
    assert all(it["preds"]["fl"][0] == "roses" for it in roses["items"])


def test_where_metadata_and_their_guard(client):
    tulips = grid(client, task="flowers", where="path LIKE '%tulips%'")
    assert tulips["total"] == 20
    b = grid(client, **{"m.camera": "B"})
    assert b["total"] == 25 and b["counts"]["m.camera"] == {"A": 75, "B": 25, "(none)": 15}
    both = grid(client, task="flowers", label="tulips", **{"m.camera": "A"})
    assert both["total"] == both["counts"]["m.camera"]["A"] < 20
    for bad, why in [({"where": "1=1; DROP TABLE items"}, "where"), ({"where": "(SELECT 1) = 1"}, "subquery"),
                     ({"limit": "501"}, "limit"), ({"conf_min": "2"}, "conf_min"), ({"status": "gone"}, "status"),
                     ({"colour": "x"}, "unknown filter"), ({"m.nope": "x"}, "no metadata column"),
                     ({"task": "nope"}, "task"), ({"pred": "roses"}, "need a head"), ({"offset": "-1"}, "offset"),
                     ({"region": "0,0;1,1"}, "region")]:
        r = client.get("/grid", params=bad)
        assert r.status_code in (400, 422) and why in r.json()["error"], (bad, r.text)


def test_map_region_selects_what_lies_inside(client):
    m = client.get("/map", params={"method": "pca", "task": "flowers", "model": "efficientnet-lite0"}).json()
    everything = "-0.01,-0.01;1.01,-0.01;1.01,1.01;-0.01,1.01"
    out = grid(client, region=everything, region_set=m["set_id"], region_method="pca", limit=500)
    assert out["total"] == m["n"]
    left = "-0.1,-0.1;0.5,-0.1;0.5,1.1;-0.1,1.1"
    expected = sorted(i for i, x in zip(m["ids"], m["x"]) if x < 0.5)
    got = client.get("/grid/ids", params={"region": left, "region_set": m["set_id"], "region_method": "pca"}).json()
    assert sorted(got["ids"]) == expected and 0 < len(expected) < m["n"]


def test_numeric_task_gets_a_colour_scale_and_the_task_rule(client):
    m = client.get("/map", params={"method": "pca", "task": "age", "model": "efficientnet-lite0"}).json()
    assert m["numeric"] is True and m["range"] == [0.0, 49.0] and not m["classes"]
    assert sum(v is not None for v in m["values"]) == 100
    fl = client.get("/map", params={"method": "pca", "task": "flowers", "model": "efficientnet-lite0"}).json()
    assert fl["numeric"] is False and len(fl["classes"]) == 5
    none = client.get("/map", params={"method": "pca", "model": "efficientnet-lite0"}).json()
    assert none["task"] is None and set(none["codes"]) == {-1}           # several tasks, none chosen: no colours


def test_item_view_predictions_copies(client):
    first = grid(client, task="flowers", label="roses", limit=1)["items"][0]
    v = client.get(f"/items/{first['item_id']}/view", params={"task": "flowers"}).json()
    (p,) = v["predictions"]
    assert p["head"] == "fl" and len(p["top"]) == 3 and p["top"][0][1] >= p["top"][1][1]
    assert abs(p["top"][0][1] - grid(client, head="fl", where=f"item_id = {first['item_id']}")["items"][0]
               ["preds"]["fl"][1]) < 1e-3
    assert v["copies"] == [] and v["excluded"] is None
    assert client.get("/items/999999/view").status_code == 404


def test_tags_exclusions_and_findings_show_and_filter(client):
    ids = [it["item_id"] for it in grid(client, task="flowers", label="daisy", limit=5)["items"]]
    r = client.post("/edits", json={"action": "tag", "ids": ids[:3], "tag": "blurry"})
    assert r.status_code == 200, r.text
    r = client.post("/edits", json={"action": "exclude", "ids": ids[3:5], "reason": "duplicate"})
    assert r.status_code == 200, r.text
    tagged = grid(client, task="flowers", tag="blurry")
    assert sorted(it["item_id"] for it in tagged["items"]) == sorted(ids[:3])
    assert all(it["tags"] == ["blurry"] for it in tagged["items"]) and tagged["counts"]["tag"] == {"blurry": 3}
    assert grid(client, task="flowers", where="tag = 'blurry'")["total"] == 3      # the guarded SQL reads tags too
    out = grid(client, task="flowers", status="excluded")
    assert sorted(it["item_id"] for it in out["items"]) == sorted(ids[3:5])
    assert all(it["excluded"] == "duplicate" for it in out["items"])
    assert grid(client, task="flowers", status="included")["total"] == 113
    v = client.get(f"/items/{ids[3]}/view", params={"task": "flowers"}).json()
    assert v["excluded"] == "duplicate"
    assert client.get(f"/items/{ids[0]}/view").json()["tags"] == ["blurry"]
    for _ in range(2):
        assert client.post("/edits/undo", json={}).status_code == 200
    assert grid(client, task="flowers", tag="blurry")["total"] == 0
    assert grid(client, task="flowers", status="excluded")["total"] == 0
