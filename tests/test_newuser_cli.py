"""What a new user meets on the command line and in the pages: --store before the command, plain query text in
JSON, no --task asked for where no labels are read, tables that say how much more there is, a README said once."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import query, sample_images
from serve_helpers import build_store

README = Path(__file__).resolve().parent.parent / "README.md"


def _json(result):
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def multi(tmp_path_factory, home):
    """The sample photos (task flowers, head fl) and a few BBC articles (task news): a store with two tasks."""
    return build_store(tmp_path_factory)


# ---- --store before the command -----------------------------------------------------------------------------
def test_store_before_the_command(run, multi):
    out = _json(run("--store", multi, "stats", "--json"))
    assert out["store"] == str(multi) and set(out["tasks"]) == {"flowers", "news"}
    found = _json(run("--store", multi, "search", "--id", "1", "-k", "2", "--task", "flowers", "--json"))
    assert len(found["results"]) == 2
    # the same folder on both sides is fine; two different ones are refused in one line
    assert _json(run("--store", multi, "stats", "--store", multi, "--json"))["store"] == str(multi)
    r = run("--store", multi, "stats", "--store", multi.parent / "other", ok=False)
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and "--store" in r.output
    assert "Traceback" not in r.output


def test_store_before_a_missing_store_says_so(run, tmp_path):
    r = run("--store", tmp_path / "nothing", "stats", ok=False)
    assert r.exit_code == 1 and "no featstore store at" in r.output and not (tmp_path / "nothing").exists()


# ---- the query as plain text --------------------------------------------------------------------------------
def test_text_query_is_plain_in_json_and_quoted_in_the_table(run, multi):
    ask = ("search", "--text", "a red rose", "--task", "news", "--store", multi)
    out = _json(run(*ask, "-k", "2", "--json"))
    assert out["query"] == "a red rose"
    assert run(*ask, "-k", "2").stdout.splitlines()[0].startswith("2 nearest to 'a red rose'")   # quoted for people
    assert run(*ask, "-k", "1", "--csv").stdout.splitlines()[1].startswith("a red rose,1,")


# ---- a task only where labels are read ----------------------------------------------------------------------
SEVERAL = "Error: several tasks in this store (flowers, news): pass --task"


def test_search_by_id_needs_no_task(run, multi):
    out = _json(run("search", "--id", "1", "-k", "3", "--store", multi, "--json"))
    assert out["task"] is None and len(out["results"]) == 3 and all(r["label"] is None for r in out["results"])
    assert "--task" in out["note"]
    human = run("search", "--id", "1", "-k", "3", "--store", multi)
    header = human.stdout.splitlines()[1].split()
    assert header == ["rank", "score", "id", "path"] and "--task" in human.stderr
    # a condition that reads no label needs no task either; one that does still asks for it
    wide = _json(run("search", "--id", "1", "-k", "3", "--where", "width > 10", "--store", multi, "--json"))
    assert wide["task"] is None and len(wide["results"]) == 3
    for where in ("label = 'roses'", "split IS NULL"):
        r = run("search", "--id", "1", "--where", where, "--store", multi, ok=False)
        assert r.exit_code == 1 and r.output.strip() == SEVERAL, r.output
    # a string that merely holds the word is not a label reference
    literal = _json(run("search", "--id", "1", "-k", "2", "--where", "path NOT LIKE '%label%'", "--store", multi,
                        "--json"))
    assert literal["task"] is None
    # with --task the labels are shown as before
    shown = _json(run("search", "--id", "1", "-k", "3", "--task", "flowers", "--store", multi, "--json"))
    assert shown["task"] == "flowers" and all(r["label"] for r in shown["results"])


def test_one_task_store_still_shows_its_labels(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    out = _json(run("search", "--id", "1", "-k", "3", "--store", store, "--json"))
    assert out["task"] == "flowers" and all(r["label"] for r in out["results"]) and not out["note"]
    assert run("search", "--id", "1", "-k", "3", "--store", store).stdout.splitlines()[1].split()[2] == "flowers"


def test_server_search_needs_no_task(multi):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(multi)
    try:
        with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as client:
            by_id = client.post("/search", json={"id": 3, "k": 3})
            assert by_id.status_code == 200, by_id.text
            assert by_id.json()["task"] is None and len(by_id.json()["results"]) == 3
            text = client.post("/search", json={"text": "a red rose", "k": 2}).json()
            assert text["query"] == "a red rose"
            page = client.get("/items", params={"limit": 3})
            assert page.status_code == 200 and page.json()["task"] is None
            labelled = client.post("/search", json={"id": 3, "where": "label = 'roses'"})
            assert labelled.status_code == 400 and "several tasks in this store" in labelled.json()["error"]
    finally:
        state.close()


# ---- how much more there is ---------------------------------------------------------------------------------
def test_audit_says_how_many_more(run, multi):
    pytest.importorskip("cleanlab")
    out = run("audit", "--task", "flowers", "--show", "4", "--store", multi).stdout
    full = _json(run("audit", "--task", "flowers", "--store", multi, "--json"))
    assert len(full["outliers"]) == 50
    assert "... 46 more of the top 50 outliers (--show N, --json or --csv lists them; --limit N ranks more)" in out
    issues = len(full["label_issues"])
    if issues > 4:
        assert f"... {issues - 4} more label issues" in out
    groups = len(full["near_duplicates"]["groups"])
    if groups > 4:
        assert f"... {groups - 4} more near-duplicate groups" in out


def test_label_reports_new_changed_unchanged(run, multi, tmp_path):
    paths = [p for (p,) in query(multi, "SELECT path FROM items WHERE status = 'ok' AND path LIKE '%.jpg' "
                                        "ORDER BY path LIMIT 6")]
    first = tmp_path / "first.csv"
    first.write_text("path,label\n" + "".join(f"{p},red\n" for p in paths[:4]))
    out = _json(run("label", "--task", "colour", "--csv", first, "--store", multi, "--json"))
    assert (out["new"], out["changed"], out["unchanged"]) == (4, 0, 0)
    second = tmp_path / "second.csv"
    second.write_text("path,label\n" + f"{paths[0]},red\n{paths[1]},blue\n" + "".join(f"{p},red\n"
                                                                                     for p in paths[4:]))
    r = run("label", "--task", "colour", "--csv", second, "--store", multi)
    assert "4 paths labelled from 4 rows" in r.stdout and "2 new, 1 changed, 1 unchanged" in r.stdout
    run("label", "--task", "colour", "--csv", first, "--store", multi)       # leave the task as it was (4 red)


def test_stats_summarises_duplicates(run, tmp_path):
    folder, store = tmp_path / "dups", tmp_path / "store"
    folder.mkdir()
    photos = sample_images(2)[:8]
    for i, p in enumerate(photos):
        shutil.copy2(p, folder / f"{i}.jpg")
        shutil.copy2(p, folder / f"{i}-copy.jpg")
    run("embed", folder, "--store", store, "--no-progress")
    out = run("stats", "--store", store).stdout
    assert "8 contents stored at more than one path (8 extra paths)" in out
    assert sum(line.startswith("  same content at") for line in out.splitlines()) == 3
    assert "stats --verbose lists all" in out
    full = run("stats", "--verbose", "--store", store).stdout
    assert sum(line.startswith("  same content at") for line in full.splitlines()) == 8
    assert _json(run("stats", "--store", store, "--json"))["duplicates"][7]["paths"]


# ---- README ---------------------------------------------------------------------------------------------------
def test_readme_says_each_paragraph_once():
    text = README.read_text()
    assert text.count("Only `embed` creates a store") == 1
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 80]
    assert len(paragraphs) == len(set(paragraphs))
    assert "featstore --store DIR COMMAND" in text
