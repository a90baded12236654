"""Filtered search (--where): SQL over items in DuckDB, k results whenever k items pass, the exact-subset and the
FAISS ID-selector paths agree."""
import json

import pytest

from conftest import SAMPLE, embed_into_new_store, query


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    return embed_into_new_store(tmp_path_factory, "search")


def _search(run, store, *args):
    return json.loads(run("search", *args, "--store", store, "--json").stdout)


def test_where_returns_k_matching_items_even_when_the_unfiltered_top_k_has_none(run, store):
    rose = sorted((SAMPLE / "roses").glob("*.jpg"))[0]
    plain = _search(run, store, "--like", rose, "-k", "5")
    assert "tulips" not in [r["label"] for r in plain["results"]][:1]
    out = _search(run, store, "--like", rose, "-k", "7", "--where", "label = 'tulips' AND width >= 200")
    wide_tulips = query(store, "SELECT count(*) FROM items i JOIN labels l ON l.path = i.path "
                               "WHERE l.label = 'tulips' AND i.width >= 200 AND i.status = 'ok'")[0][0]
    assert out["passing"] == wide_tulips >= 7
    assert len(out["results"]) == 7 and {r["label"] for r in out["results"]} == {"tulips"}
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_where_on_path_and_fewer_passing_than_k(run, store):
    out = _search(run, store, "--id", "1", "-k", "10", "--where", "path LIKE '%daisy%' AND item_id <= 4")
    assert out["passing"] == 4 and len(out["results"]) == 3          # the query item itself is excluded
    assert all("daisy" in r["path"] for r in out["results"])


def test_bad_where_is_one_line(run, store):
    r = run("search", "--id", "1", "--where", "colour = 'red'", "--store", store, ok=False)
    assert r.exit_code != 0 and "where:" in r.output and "'colour' is not an item column" in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_duplicates_exact_near_and_leakage(run, small_folder, tmp_path):
    from PIL import Image

    originals = sorted(small_folder.rglob("*.jpg"))
    for p in originals[:3]:            # re-encoded: new bytes, same picture
        Image.open(p).convert("RGB").save(p.with_name(f"reenc-{p.name}"), quality=90)
    (small_folder / "daisy" / "copy.jpg").write_bytes(originals[5].read_bytes())
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    out = json.loads(run("duplicates", "--store", store, "--json").stdout)
    assert len(out["exact"]) == 1 and len(out["exact"][0]["paths"]) == 2
    groups = [sorted(it["path"].rsplit("/", 1)[1] for it in g["items"]) for g in out["near_groups"]]
    for p in originals[:3]:
        assert any({p.name, f"reenc-{p.name}"} <= set(g) for g in groups), groups
    assert all(g["max_similarity"] >= 0.97 for g in out["near_groups"])

    r = run("duplicates", "--task", "flowers", "--store", store, ok=False)
    assert r.exit_code != 0 and "no stored held-out split yet" in r.output
    run("fit-head", "--task", "flowers", "--store", store)
    out = json.loads(run("duplicates", "--task", "flowers", "--store", store, "--json").stdout)
    split = dict(query(store, "SELECT hash, split FROM splits WHERE task = 'flowers'"))
    by_path = dict(query(store, "SELECT path, hash FROM items"))
    straddling = sum(split[by_path[str(p)]] != split[by_path[str(p.with_name('reenc-' + p.name))]]
                     for p in originals[:3])
    assert len(out["leakage"]["pairs"]) == straddling
    human = run("duplicates", "--task", "flowers", "--store", store).output
    assert "leakage for task 'flowers'" in human and "exact duplicate groups" in human


def test_batch_queries_folder_ids_and_csv(run, store, tmp_path):
    import csv
    import io

    folder = SAMPLE / "tulips"
    n_files = len(list(folder.glob("*.jpg")))
    rows = list(csv.DictReader(io.StringIO(run("search", "--like", folder, "-k", "3", "--csv",
                                               "--store", store).stdout)))
    assert len(rows) == 3 * n_files and {r["rank"] for r in rows} == {"1", "2", "3"}
    (tmp_path / "q.csv").write_text("id\n1\n5\n")
    batch = _search(run, store, "--queries", tmp_path / "q.csv", "-k", "4")["queries"]
    singles = [_search(run, store, "--id", i, "-k", "4") for i in (1, 5)]
    assert [[r["item_id"] for r in b["results"]] for b in batch] == \
        [[r["item_id"] for r in s["results"]] for s in singles]
    assert len(_search(run, store, "--id", "1,5", "-k", "2")["queries"]) == 2
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    r = run("search", "--queries", tmp_path / "bad.csv", "--store", store, ok=False)
    assert r.exit_code != 0 and "needs a header with a 'path', 'id' or 'text' column" in r.output
