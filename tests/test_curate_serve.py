"""Curation through the web server: POST /edits and /edits/undo are made by the writer child (the server never takes
the writer lock), committed before the answer and served from the next request on, seen by the CLI; a refit runs
as a background job while the server keeps answering; --read-only refuses writes; bad bodies get one line."""
import json
import shutil
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import featstore  # noqa: E402
from conftest import embed_into_new_store, query  # noqa: E402


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, home):
    return embed_into_new_store(tmp_path_factory, "curate-serve")


@pytest.fixture
def store(embedded, tmp_path):
    shutil.copytree(embedded, tmp_path / "store")
    return tmp_path / "store"


def serving(store, read_only=False):
    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(store, read_only=read_only, refresh=False)
    return state, TestClient(create_app(state), base_url="http://127.0.0.1:8765", raise_server_exceptions=False)


def ids_of(store, label):
    return [r[0] for r in query(store, f"SELECT i.item_id FROM items i JOIN labels l ON l.path = i.path "
                                       f"WHERE l.task = 'flowers' AND l.label = '{label}' ORDER BY i.item_id")]


def test_rest_edits_are_committed_served_and_seen_by_the_cli(store, run):
    roses, tulips = ids_of(store, "roses"), ids_of(store, "tulips")
    state, client = serving(store)
    with client:
        gen = client.get("/stats").json()["served_generation"]
        r = client.post("/edits", json={"action": "tag", "ids": tulips[:4], "tag": "check me"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["changed"] == 4 and out["edit_id"] == 1 and out["generation"] > gen and out["served"]
        assert client.get("/stats").json()["served_generation"] == out["generation"]       # the next read has it
        page = client.get("/items", params={"where": "tag = 'check me'", "task": "flowers"}).json()
        assert sorted(i["item_id"] for i in page["items"]) == tulips[:4]
        r = client.post("/edits", json={"action": "label", "task": "flowers", "ids": roses[:2], "label": "tulips"})
        assert r.json()["changed"] == 2
        r = client.post("/edits", json={"action": "exclude", "ids": roses[2:5], "reason": "outlier"})
        assert r.json()["changed"] == 3
        edits = client.get("/edits", params={"limit": 10}).json()["edits"]
        assert [e["action"] for e in edits] == ["exclude", "label", "tag"]
        assert all(e["who"] == "web (testclient)" for e in edits)
        # the CLI sees all of it (the server holds no lock on the store)
        assert json.loads(run("stats", "--store", store, "--json").output)["curation"] == \
            {"tags": {"check me": 4}, "excluded": 3, "edits": 3}
        found = json.loads(run("search", "--id", roses[0], "--where", "tag = 'check me'", "--store", store,
                               "--json").output)
        assert found["passing"] == 4
        m = json.loads(run("fit-head", "--store", store, "--json", "--force").output)["metrics"]
        assert m["n_train"] + m["n_test"] == 97
        assert (featstore.open(store).Xy("flowers")[1] == "tulips").sum() == 22
        r = client.post("/edits/undo", json={})
        assert r.status_code == 200 and r.json()["undone"] == 3 and r.json()["changed"] == 3
        assert featstore.open(store).excluded() == {}
        r = client.post("/edits/undo", json={"edit": 1})
        assert r.json()["undone"] == 1 and featstore.open(store).tags() == {}
        assert client.get("/items", params={"where": "tag = 'check me'"}).json()["total"] == 0
        client.post("/edits/undo", json={})
        r = client.post("/edits/undo", json={})
        assert r.status_code == 400 and "nothing to undo" in r.json()["error"]
        assert query(store, "SELECT count(*) FROM labels WHERE label = 'tulips'") == [(20,)]
    state.close()


def test_accept_through_rest_uses_the_stored_audit(store):
    roses = ids_of(store, "roses")[:4]
    fs = featstore.open(store)
    fs.set_labels("flowers", roses, "daisy")
    fs.audit("flowers")
    from featstore.store.db import Store
    from featstore.store.edits import audit_findings
    with Store.open(store) as st:
        issues = {f["item_id"]: f for f in audit_findings(st, "flowers") if f["kind"] == "label_issue"}
    picked = [i for i in roses if i in issues][:2]
    assert picked
    state, client = serving(store)
    with client:
        r = client.post("/edits", json={"action": "accept", "task": "flowers", "ids": picked})
        assert r.status_code == 200 and r.json()["changed"] == len(picked), r.text
    state.close()
    labels = dict(query(store, "SELECT i.item_id, l.label FROM labels l JOIN items i USING (path)"))
    assert all(labels[i] == issues[i]["suggested"] for i in picked)


def test_refit_runs_in_the_background_while_the_server_answers(store):
    state, client = serving(store)
    with client:
        client.post("/edits", json={"action": "exclude", "ids": ids_of(store, "daisy")[:5], "reason": "duplicate"})
        r = client.post("/refit", json={"task": "flowers", "kind": "logreg"})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        answered, deadline = 0, time.monotonic() + 300
        while (j := client.get(f"/jobs/{job}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, j
            assert client.get("/stats").status_code == 200          # the server keeps answering
            answered += 1
            time.sleep(0.2)
        assert j["state"] == "done", j
        res = j["result"]
        assert res["n_train"] + res["n_test"] == 95                  # the excluded items are left out
        assert res["leaderboard"][0]["kind"] == "logreg" and 0 <= res["leaderboard"][0]["value"] <= 1
        assert sorted(res["confusion"]["labels"]) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
        assert sum(map(sum, res["confusion"]["matrix"])) == res["n_test"]
        assert client.get("/jobs/refit-999").status_code == 404
        assert client.post("/refit", json={"task": "nope"}).status_code == 400
        jobs = [client.post("/refit", json={"task": "flowers"}) for _ in range(3)]      # bounded: two at a time
        assert [r.status_code for r in jobs] == [202, 202, 429] and "wait for them" in jobs[2].json()["error"]
        for r in jobs[:2]:
            while client.get(f"/jobs/{r.json()['job']}").json()["state"] in ("queued", "running"):
                assert time.monotonic() < deadline + 300
                time.sleep(0.3)
            assert client.get(f"/jobs/{r.json()['job']}").json()["state"] == "done"
    state.close()


def test_read_only_server_refuses_writes(store):
    state, client = serving(store, read_only=True)
    with client:
        for path, body in [("/edits", {"action": "tag", "ids": [1], "tag": "x"}), ("/edits/undo", {}),
                           ("/refit", {"task": "flowers"})]:
            r = client.post(path, json=body)
            assert r.status_code == 403 and "--read-only" in r.json()["error"], r.text
            assert "\n" not in r.json()["error"]
        assert client.get("/edits").json() == {"edits": []}
    state.close()
    assert query(store, "SELECT count(*) FROM tags") == [(0,)]


def test_bad_bodies_get_one_line(store):
    state, client = serving(store)
    with client:
        cases = [
            ({"action": "rename", "ids": [1]}, "action"),
            ({"action": "tag", "ids": [1], "tag": "a;b"}, "tag 'a;b'"),
            ({"action": "tag", "ids": [1], "tag": "x" * 201}, "tag"),
            ({"action": "tag", "ids": ["1"], "tag": "x"}, "ids.0"),
            ({"action": "tag", "ids": [1.5], "tag": "x"}, "ids.0"),
            ({"action": "tag", "ids": [True], "tag": "x"}, "ids.0"),
            ({"action": "tag", "ids": [], "tag": "x"}, "ids"),
            ({"action": "tag", "ids": list(range(100_001)), "tag": "x"}, "ids"),
            ({"action": "tag", "ids": [-1], "tag": "x"}, "ids"),
            ({"action": "tag", "ids": [1]}, "tag: action 'tag' needs it"),
            ({"action": "label", "ids": [1], "label": "x"}, "task: action 'label' needs it"),
            ({"action": "label", "task": "flowers", "ids": [1], "label": "x" * 201}, "label"),
            ({"action": "exclude", "ids": [1], "reason": "a\nb"}, "reason: holds a control character"),
            ({"action": "tag", "ids": [1], "tag": "x", "sql": "DROP TABLE items"}, "sql"),
        ]
        for body, says in cases:
            r = client.post("/edits", json=body)
            assert r.status_code in (400, 422), (body, r.status_code, r.text)
            err = r.json()["error"]
            assert says in err and "\n" not in err and len(err) < 300, (body, err)
        r = client.post("/edits", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        r = client.post("/edits", json={"action": "tag", "ids": [999999], "tag": "x"})
        assert r.status_code in (400, 404) and "no item with id 999999" in r.json()["error"]
        r = client.post("/edits", json={"action": "accept", "task": "flowers", "ids": [1]})
        assert r.status_code == 400 and r.json()["error"] == "no stored audit of task 'flowers'", r.text
        r = client.post("/edits/undo", json={"edit": "1"})
        assert r.status_code == 400 and "edit" in r.json()["error"]
        r = client.post("/edits", json={"action": "tag", "ids": [1], "tag": "x"},
                        headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert client.get("/edits", params={"limit": 0}).status_code == 400
    state.close()
    assert query(store, "SELECT count(*) FROM edits") == [(0,)]


def test_an_edit_waits_for_another_writer_then_says_who_holds_the_store(store):
    from featstore.store.db import Store

    state, client = serving(store)
    with client:
        client.app.state.edit_writer.lock_wait = 1.0
        with Store.open(store, write=True):              # another writer (an embed, a fit) holds the store
            t0 = time.monotonic()
            r = client.post("/edits", json={"action": "tag", "ids": [1], "tag": "x"})
            assert r.status_code == 409 and "is being written by PID" in r.json()["error"], r.text
            assert time.monotonic() - t0 < 30
        r = client.post("/edits", json={"action": "tag", "ids": [1], "tag": "x"})      # let go: it goes through
        assert r.status_code == 200 and r.json()["changed"] == 1
    state.close()
