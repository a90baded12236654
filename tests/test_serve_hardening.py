"""featstore serve answers only its own page: requests addressed by another name (DNS rebinding) and writes from
another site are refused; request bodies are checked against a schema (400/422 with one line, never a 500);
error texts hold no path of the server's machine and no command-line advice."""
import io
import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import SAMPLE  # noqa: E402
from serve_helpers import build_store  # noqa: E402

ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    return build_store(tmp_path_factory)


@pytest.fixture(scope="module")
def state(store):
    from featstore.serve.state import ServerState

    st = ServerState(store, refresh=False)
    yield st
    st.close()


def client_for(state, hosts=None, base_url=ORIGIN):
    from featstore.serve.app import create_app

    app = create_app(state) if hosts is None else create_app(state, hosts)
    return TestClient(app, base_url=base_url, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(state):
    with client_for(state) as c:
        yield c


def rose_upload():
    path = sorted((SAMPLE / "roses").glob("*.jpg"))[0]
    return {"file": (path.name, path.read_bytes(), "image/jpeg")}


def test_another_host_name_is_refused(client):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    for url in ("/", "/items", "/items/1", "/items/1/thumbnail", "/stats", "/openapi.json"):
        r = client.get(url, headers={"Host": "evil.example:8765"})
        assert r.status_code == 400 and "not a name this server answers to" in r.json()["error"], url
    assert client.post("/search", json={"id": 1}, headers={"Host": "evil.example"}).status_code == 400
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert client.get("/stats", headers={"Host": host}).status_code == 200, host


def test_allowed_host_adds_a_name(state):
    from featstore.serve.guard import allowed_hosts

    hosts = allowed_hosts("127.0.0.1", ("featstore.lab.example",))
    with client_for(state, hosts, base_url="http://featstore.lab.example") as c:
        assert c.get("/stats").status_code == 200
        assert c.get("/stats", headers={"Host": "other.example"}).status_code == 400
    assert "10.1.2.3" in allowed_hosts("10.1.2.3") and "0.0.0.0" not in allowed_hosts("0.0.0.0")


def test_cross_origin_writes_are_refused(store, state):
    """A page on another site can make a browser POST a form here; the browser says where it came from."""
    with client_for(state) as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                        {"Origin": "http://127.0.0.1:9999"}):
            added = c.post("/items", files=rose_upload(), headers=headers)
            assert added.status_code == 403 and "refused" in added.json()["error"], headers
            assert c.post("/search", json={"id": 1}, headers=headers).status_code == 403
            assert c.post("/predict", json={"head": "fl", "texts": ["x"]}, headers=headers).status_code == 403
        assert not (store / "uploads").exists()
        # the page itself (same origin), and clients that are no browser, are answered
        for headers in ({"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}, {}):
            assert c.post("/search", json={"id": 1, "k": 2, "task": "flowers"}, headers=headers).status_code == 200
        reading = c.get("/items", params={"task": "flowers"}, headers={"Origin": "http://evil.example"})
        assert reading.status_code == 200      # a read: the browser's same-origin policy keeps it from that page


@pytest.mark.parametrize("body", [
    {"text": "x", "where": 1}, {"text": "x", "where": ["label = 'x'"]}, {"text": "x", "where": {"a": 1}},
    {"text": "x", "where": True}, {"text": "x", "k": 2.5}, {"text": "x", "k": "5"},
    {"text": "x", "k": True}, {"text": "x", "k": 0}, {"text": "x", "k": 10 ** 30}, {"id": True}, {"id": 1.5},
    {"id": "1"}, {"id": -1}, {"text": 5}, {"text": ["a"]}, {"text": "x", "model": 3}, {"text": "x", "task": []},
    {"text": "x", "id": 1}, {}, {"text": "x", "unknown": 1},
])
def test_search_bodies_are_checked(client, body):
    r = client.post("/search", json=body)
    assert r.status_code in (400, 422), (body, r.status_code, r.text)
    assert "\n" not in r.json()["error"] and "internal error" not in r.json()["error"]


@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000, '{"text": ' + "[" * 5000 + "]" * 5000 + "}", '{"text": "x", "k": Infinity}',
    '{"text": "x", "k": 1e309}', '{"text": "x", "k": -1e309}',
    '{"text": "x", "k": NaN}', "not json", "[1, 2]", '"a string"', '{"text": "x"', "\xff\xfe",
])
def test_malformed_json_is_one_line(client, raw):
    r = client.post("/search", content=raw.encode("utf-8", "surrogatepass"),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "\n" not in r.json()["error"], (raw[:40], r.text[:200])


@pytest.mark.parametrize("body", [
    {"head": "fl", "texts": "just a string"}, {"head": "fl", "texts": [1, 2]}, {"head": 3, "texts": ["x"]},
    {"head": "fl", "texts": []}, {"texts": ["x"]}, {"head": "fl", "texts": [["nested"]]},
])
def test_predict_bodies_are_checked(client, body):
    r = client.post("/predict", json=body)
    assert r.status_code in (400, 422) and "internal error" not in r.json()["error"], (body, r.text)


def test_form_fields_are_checked(client):
    for k in ("2.5", "1e309", "ten", "-3", "0", "100000000000000000000"):
        r = client.post("/search", files=rose_upload(), data={"k": k})
        assert r.status_code in (400, 422) and r.json()["error"].startswith("k:"), (k, r.text)
    assert client.post("/search", files=rose_upload(), data={"k": "3", "task": "flowers"}).status_code == 200


def test_errors_over_http_hold_no_server_paths_or_command_line_advice(client, state, store):
    photo = sorted((SAMPLE / "roses").glob("*.jpg"))[0].read_bytes()
    truncated = io.BytesIO(photo[:len(photo) // 2])
    answers = [
        client.get("/items/999999"),
        client.get("/items/999999/thumbnail"),
        client.post("/search", json={"id": 999999, "task": "flowers"}),
        client.post("/search", json={"text": "x", "model": "no-such-model", "task": "flowers"}),
        client.post("/search", files={"file": ("holiday.jpg", truncated.getvalue(), "image/jpeg")},
                    data={"task": "flowers"}),
        client.post("/search", json={"id": 1, "where": "label = 'roses'"}),
        client.get("/heads/nope/confusion"),
        client.post("/predict", json={"head": "nope", "texts": ["x"]}),
    ]
    uncoloured = client.get("/map", params={"color": "label", "method": "pca"}).json()   # two tasks, none named:
    assert uncoloured["task"] is None and set(uncoloured["codes"]) == {-1}        # the CLI's rule, no colours
    server_paths = [str(state.work), str(store), "/tmp/", "featstore-snapshot-", "featstore-upload-", "upload-"]
    for r in answers:
        message = r.json()["error"]
        assert r.status_code in (400, 404, 415, 422), (r.status_code, message)
        assert not any(p in message for p in server_paths), message
        assert "`featstore" not in message and "--" not in message, message
    assert "holiday.jpg" in answers[4].json()["error"]
    assert "give 'task'" in answers[5].json()["error"] or "task" in answers[5].json()["error"]


def test_json_error_bodies_are_json(client):
    r = client.post("/search", content=b"{", headers={"content-type": "application/json"})
    assert r.headers["content-type"].startswith("application/json") and json.loads(r.text)["error"]
