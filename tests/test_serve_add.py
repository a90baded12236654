"""featstore serve adds uploads to the store only when asked: kept under STORE/uploads/, embedded by a child
process (the server never takes the writer lock), served from the next snapshot; refused on a --read-only server."""
import io
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import featstore  # noqa: E402
from conftest import SAMPLE, sample_images  # noqa: E402


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, home):
    import shutil

    root = tmp_path_factory.mktemp("serve-add")
    for p in sample_images(2):
        (root / "photos" / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / "photos" / p.parent.name / p.name)
    featstore.open(root / "store").embed(root / "photos", progress=False, log=lambda _m: None)
    return root / "store"


def serving(store, read_only=False):
    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(store, read_only=read_only, refresh=False)
    return state, TestClient(create_app(state), base_url="http://127.0.0.1:8765", raise_server_exceptions=False)


def upload(path):
    return ("file", (path.name, path.read_bytes(), "image/jpeg"))


def wait_done(client, job, timeout=240):
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/jobs/{job['id']}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return job


def test_search_adds_nothing_unless_asked_then_post_items_adds(small_store):
    new = sorted((SAMPLE / "tulips").glob("*.jpg"))[-1]          # not among the stored ones
    state, client = serving(small_store)
    with client:
        before = client.get("/stats").json()["items"]["ok"]
        assert client.get("/map").json()["n"] == before
        r = client.post("/search", files=[upload(new)], data={"k": "3"})
        assert r.status_code == 200 and "added" not in r.json()
        assert not (small_store / "uploads").exists()

        r = client.post("/items", files=[upload(new), upload(new)])       # the same image twice: one file
        assert r.status_code == 202, r.text
        job = wait_done(client, r.json())
        assert job["status"] == "done" and job["result"]["embedded"] == 1 and job["result"]["failed"] == 0, job
        assert len(list((small_store / "uploads").iterdir())) == 1
        assert state.refresh_now()                                       # the next snapshot serves it
        assert client.get("/stats").json()["items"]["ok"] == before + 1
        assert client.get("/map").json()["n"] == before + 1                 # a new generation, a new map ...
        assert len(list((small_store / "maps").glob("*-tsne.npz"))) == 1     # ... and the old one is gone
        page = client.get("/items", params={"where": "path LIKE '%/uploads/%'"}).json()
        assert page["total"] == 1

        r = client.post("/search", files=[upload(new)], data={"k": "2", "add": "true"})   # already there
        assert r.status_code == 200 and r.json()["results"][0]["item_id"] == page["items"][0]["item_id"]
        job = wait_done(client, r.json()["added"])
        assert job["result"]["embedded"] == 0 and job["result"]["already"] == 1, job
    state.close()


def test_a_broken_upload_is_refused_and_a_read_only_server_adds_nothing(small_store):
    state, client = serving(small_store, read_only=True)
    with client:
        rose = sorted((SAMPLE / "roses").glob("*.jpg"))[-1]
        r = client.post("/items", files=[upload(rose)])
        assert r.status_code == 403 and "read-only" in r.json()["error"]
        r = client.post("/search", files=[upload(rose)], data={"add": "1"})
        assert r.status_code == 403
        r = client.post("/items", files=[("file", ("x.jpg", io.BytesIO(b"not an image"), "image/jpeg"))])
        assert r.status_code == 415 and "x.jpg" in r.json()["error"]
        assert client.get("/jobs/99").status_code == 404
    state.close()
