"""Curation on a real store (the sample photos embedded with EfficientNet-Lite0): labels set by hand and accepted
from an audit reach fit-head; tags filter through the --where guard; excluded items leave fitting and evaluation;
every edit is in the log and undone exactly (twice, after a restart, refused when overtaken); older stores migrate."""
import json
import shutil
import subprocess
import sys

import duckdb
import pytest

import featstore
from conftest import embed_into_new_store, query
from featstore.errors import FeatstoreError


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, home):
    return embed_into_new_store(tmp_path_factory, "curate")


@pytest.fixture
def store(embedded, tmp_path):
    """A private copy of the embedded store for one test."""
    shutil.copytree(embedded, tmp_path / "store")
    return tmp_path / "store"


def ids_of(store, label):
    return [r[0] for r in query(store, f"SELECT i.item_id FROM items i JOIN labels l ON l.path = i.path "
                                       f"WHERE l.task = 'flowers' AND l.label = '{label}' ORDER BY i.item_id")]


def state(store):
    """Everything curation may change, as plain rows."""
    return (query(store, "SELECT task, path, label FROM labels ORDER BY ALL"),
            query(store, "SELECT path, tag FROM tags ORDER BY ALL"),
            query(store, "SELECT path, reason FROM exclusions ORDER BY ALL"))


def fit_counts(run, store):
    m = json.loads(run("fit-head", "--store", store, "--force", "--json").output)["metrics"]
    return m["n_train"] + m["n_test"], m


def test_label_change_reaches_fit_head_and_undo_restores(store, run):
    roses = ids_of(store, "roses")[:3]
    fs = featstore.open(store)
    X, y = fs.Xy("flowers")
    assert (y == "tulips").sum() == 20
    out = run("label", "--task", "flowers", "--set", "tulips", "--ids", ",".join(map(str, roses)), "--store", store)
    assert "edit 1: 3 items labelled 'tulips' in 'flowers'" in out.output and "featstore undo --edit 1" in out.output
    X, y = fs.Xy("flowers")
    assert (y == "tulips").sum() == 23 and (y == "roses").sum() == 17
    n, m = fit_counts(run, store)
    assert n == 100 and m["per_class"]["tulips"]["support"] + m["per_class"]["roses"]["support"] >= 1
    assert fs.items("flowers").set_index("item_id").loc[roses, "label"].tolist() == ["tulips"] * 3
    again = json.loads(run("label", "--task", "flowers", "--set", "tulips", "--ids", roses[0], "--store", store,
                           "--json").output)
    assert again["edit_id"] is None and again["changed"] == 0            # nothing changed: nothing logged
    run("undo", "--store", store)
    assert ids_of(store, "roses")[:3] == roses and (fs.Xy("flowers")[1] == "tulips").sum() == 20
    unl = fs.set_labels("flowers", roses[:1], None)
    assert unl["changed"] == 1 and len(fs.Xy("flowers")[1]) == 99
    with pytest.raises(FeatstoreError, match="give the label"):
        fs.set_labels("flowers", roses[:1])
    wide = query(store, "SELECT count(*) FROM items WHERE width > 300")[0][0]
    new = fs.set_labels("quality", where="width > 300", label="sharp")          # a new task, by a condition
    assert new["changed"] == wide > 0 and fs.stats()["tasks"]["quality"] == wide


def test_accept_suggested_labels_from_an_audit_csv(store, run, tmp_path):
    roses = ids_of(store, "roses")[:4]
    fs = featstore.open(store)
    fs.set_labels("flowers", roses, "daisy")                      # four roses mislabelled on purpose
    audit_csv = tmp_path / "audit.csv"
    run("audit", "--store", store, "--csv", audit_csv)
    from featstore.store.db import Store
    from featstore.store.edits import audit_findings
    with Store.open(store) as st:
        stored = audit_findings(st, "flowers")
    issues = [f for f in stored if f["kind"] == "label_issue"]
    csv_rows = [line.split(",") for line in audit_csv.read_text().splitlines() if line.startswith("label_issue")]
    assert [f["path"] for f in issues] == [r[3] for r in csv_rows]          # the stored audit is the CSV's
    assert {f["kind"] for f in stored} >= {"outlier", "near_duplicate"} or len(stored) >= len(issues)
    flipped = [f for f in issues if f["item_id"] in roses]
    assert all(f["given"] == "daisy" for f in flipped) and sum(f["suggested"] == "roses" for f in flipped) >= 2
    first = next(f["item_id"] for f in flipped if f["suggested"] == "roses")
    out = json.loads(run("label", "--task", "flowers", "--accept", audit_csv, "--only", first, "--store", store,
                         "--json").output)
    assert out["changed"] == 1 and out["action"] == "accept"
    assert query(store, f"SELECT l.label FROM labels l JOIN items i ON i.path = l.path WHERE i.item_id = {first}") \
        == [("roses",)]
    human = run("label", "--task", "flowers", "--accept", audit_csv, "--store", store).output
    assert "given their suggested label in 'flowers'" in human
    assert "skipped: " in human and "the audit saw 'daisy'" in human         # the one accepted before
    now = dict(query(store, "SELECT i.item_id, l.label FROM labels l JOIN items i ON i.path = l.path"))
    assert all(now[f["item_id"]] == f["suggested"] for f in flipped)
    run("undo", "--store", store)
    run("undo", "--store", store)
    assert set(ids_of(store, "daisy")) >= set(f["item_id"] for f in flipped)       # both accepts undone
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\na.jpg,x\n")
    r = run("label", "--task", "flowers", "--accept", bad, "--store", store, ok=False)
    assert r.exit_code != 0 and "not a CSV written by `featstore audit --csv`" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_tags_filter_through_the_guard(store, run):
    fs = featstore.open(store)
    tulips = ids_of(store, "tulips")[:3]
    out = run("tag", "blurry", "--ids", ",".join(map(str, tulips)), "--store", store)
    assert "edit 1: 3 items tagged 'blurry'" in out.output
    run("tag", "red", "--where", "label = 'roses'", "--store", store)
    found = fs.search(ids=ids_of(store, "daisy")[0], k=10, where="tag = 'blurry'")
    assert found["passing"] == 3 and sorted(r["item_id"] for r in found["results"]) == tulips
    assert fs.search(ids=tulips[0], k=100, where="tag IN ('red', 'blurry')")["passing"] == 23
    not_red = fs.search(ids=tulips[0], k=100, where="tag <> 'red' AND tag NOT IN ('blurry')")
    assert not_red["passing"] == 77 and all(r["label"] != "roses" for r in not_red["results"])
    assert fs.search(ids=tulips[0], k=5, where="tag IS NULL")["passing"] == 77
    assert fs.search(ids=tulips[0], k=5, where="tag IS NOT NULL OR width < 0")["passing"] == 23
    page = json.loads(run("search", "--id", tulips[0], "--where", "'blurry' = tag", "--store", store,
                          "--json").output)
    assert {r["item_id"] for r in page["results"]} == set(tulips[1:])
    for bad, says in [("lower(tag) = 'x'", "an item's tags are a set"), ("tag = 3", "quoted text"),
                      ("tag LIKE 'bl%'", "an item's tags are a set"), ("tags = 'x'", "not an item column"),
                      ("path IN (SELECT path FROM tags)", "subquery")]:
        r = run("search", "--id", tulips[0], "--where", bad, "--store", store, ok=False)
        assert r.exit_code != 0 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert list(fs.items().columns)[:11] == ["item_id", "path", "hash", "size", "mtime", "width", "height",
                                             "updated_at", "label", "split", "text"]
    run("tag", "blurry", "--remove", "--ids", tulips[0], "--store", store)
    assert fs.tags() == {"red": 20, "blurry": 2}
    stats = run("stats", "--store", store).output
    assert "curation: 3 edits, 0 items excluded from fitting; tags: red (20), blurry (2)" in stats


def test_exclude_leaves_fitting_and_evaluation(store, run):
    n, _ = fit_counts(run, store)
    assert n == 100
    daisy = ids_of(store, "daisy")[:5]
    out = run("exclude", "--ids", ",".join(map(str, daisy)), "--reason", "duplicate", "--store", store)
    assert "edit 1: 5 items excluded (duplicate)" in out.output
    n, m = fit_counts(run, store)
    assert n == 95 and m["n_train"] + m["n_test"] == 95
    X, y = featstore.open(store).Xy("flowers")
    assert len(y) == 95 and (y == "daisy").sum() == 15
    assert json.loads(run("stats", "--store", store, "--json").output)["curation"] == \
        {"tags": {}, "excluded": 5, "edits": 1}
    assert set(featstore.open(store).excluded().values()) == {"duplicate"}
    run("include", "--ids", daisy[0], "--store", store)
    assert fit_counts(run, store)[0] == 96


def test_where_tag_literals_stay_literals(store, run):
    fs = featstore.open(store)
    fs.tag([1, 2], "x")
    for where in ["tag = 'x'' OR ''1''=''1'", "tag = 'x'')) OR ((''1''=''1'",
                  "tag IN ('x', 'y''; DROP TABLE items; --')"]:
        out = fs.search(ids=3, k=5, where=where)
        assert out["passing"] == (2 if "IN" in where else 0), where
    r = run("search", "--id", 3, "--where", "tag IN (SELECT tag FROM tags)", "--store", store, ok=False)
    assert r.exit_code != 0 and "a subquery is not allowed" in r.output
    r = run("search", "--id", 3, "--where", "tag IN ('x', path)", "--store", store, ok=False)
    assert r.exit_code != 0 and "quoted text" in r.output
    assert query(store, "SELECT count(*) FROM items") == [(100,)]


def test_undo_exact_twice_and_after_a_restart(store, run):
    before = state(store)
    roses, tulips = ids_of(store, "roses"), ids_of(store, "tulips")
    fs = featstore.open(store)
    fs.set_labels("flowers", roses[:2], "tulips")
    fs.tag(roses[:1] + tulips[:2], "check")
    fs.exclude(tulips[:3], reason="outlier")
    fs.set_labels("flowers", tulips[:1], None)
    fs.tag(tulips[:1], "check", remove=True)
    assert state(store) != before
    run("undo", "--store", store)
    run("undo", "--store", store)
    mid = state(store)
    assert len(mid[2]) == 3 and len(mid[1]) == 3
    # a restart: a new process, a new handle
    done = subprocess.run([sys.executable, "-m", "featstore.cli.main", "undo", "--store", str(store), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["undone"] == 3
    fs2 = featstore.open(store)
    fs2.undo()
    fs2.undo()
    assert state(store) == before                                   # exactly: labels, tags, exclusions
    with pytest.raises(FeatstoreError, match="nothing to undo"):
        fs2.undo()
    hist = fs2.history()
    assert [h["action"] for h in hist[:5]] == ["undo"] * 5 and all(h["undone"] for h in hist[5:])
    redo = fs2.undo(hist[0]["edit_id"])                               # undoing an undo redoes
    assert redo["undone"] == hist[0]["edit_id"] and state(store) != before


def test_undo_refused_when_overtaken_and_history_rows(store, run):
    fs = featstore.open(store)
    item = ids_of(store, "roses")[0]
    first = fs.set_labels("flowers", [item], "daisy")["edit_id"]
    second = fs.set_labels("flowers", [item], "tulips")["edit_id"]
    r = run("undo", "--edit", first, "--store", store, ok=False)
    assert r.exit_code != 0 and f"edit {first} cannot be undone exactly" in r.output and f"edit {second}" in r.output
    run("undo", "--edit", second, "--store", store)
    run("undo", "--edit", first, "--store", store)
    assert query(store, f"SELECT l.label FROM labels l JOIN items i USING (path) WHERE i.item_id = {item}") \
        == [("roses",)]
    rows = json.loads(run("history", "--store", store, "--json").output)
    assert [r["edit_id"] for r in rows] == [4, 3, 2, 1]
    from featstore.apps.curate import who_default
    assert all(set(r) == {"edit_id", "at", "who", "action", "task", "count", "undone", "summary"} for r in rows)
    assert rows[-1]["who"] == who_default() and rows[-1]["undone"] == 4 and rows[-2]["undone"] == 3
    assert rows[-1]["summary"] == "1 item labelled 'daisy' in 'flowers'"
    assert rows[0]["summary"].startswith("undid edit 1")
    table = run("history", "--store", store).output
    assert "edit  at" in table and "undid edit 2" in table
    r = run("undo", "--edit", 99, "--store", store, ok=False)
    assert "no edit 99" in r.output


def test_bad_curation_input_is_one_line(store, run):
    cases = [
        (["tag", "x", "--ids", "999999"], "no item with id 999999"),
        (["tag", "x", "--ids", "1,a"], "expected item ids"),
        (["tag", "bad;tag", "--ids", "1"], "tag 'bad;tag'"),
        (["tag", "x", "--ids", "1", "--where", "width > 0"], "choose the items one way"),
        (["tag", "x"], "choose the items one way"),
        (["tag", "x", "no/such/file.jpg"], "not in the store: no/such/file.jpg"),
        (["exclude", "--ids", "1", "--reason", "a\tb"], "reason: holds a control character"),
        (["label", "--task", "flowers", "--ids", "1"], "give --csv FILE, --set LABEL, --unset or --accept"),
        (["label", "--task", "flowers", "--set", "x" * 201, "--ids", "1"], "label: longer than 200"),
    ]
    for args, says in cases:
        r = run(*args, "--store", store, ok=False)
        assert r.exit_code != 0 and says in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    assert state(store)[1:] == ([], []) and featstore.open(store).history() == []


def test_an_older_store_reads_empty_and_migrates_on_the_first_edit(store, run):
    con = duckdb.connect(str(store / "store.duckdb"))
    for table in ("edit_rows", "edits", "tags", "exclusions", "audit_findings"):
        con.execute(f"DROP TABLE {table}")
    con.execute("DROP SEQUENCE edit_ids")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    out = json.loads(run("stats", "--store", store, "--json").output)
    assert out["schema_version"] == 5 and out["curation"] == {"tags": {}, "excluded": 0, "edits": 0}
    none = run("search", "--id", "1", "--where", "tag = 'x'", "--store", store).output   # no tags table yet:
    assert "--where \"tag = 'x'\" matched no items" in none                             # no item has a tag
    found = json.loads(run("search", "--id", "1", "-k", "3", "--where", "tag IS NULL", "--store", store,
                           "--json").output)
    assert len(found["results"]) == 3
    assert fit_counts(run, store)[0] == 100               # (fit-head writes: the store migrates from here)
    run("tag", "x", "--ids", "1,2", "--store", store)
    assert json.loads(run("stats", "--store", store, "--json").output)["curation"]["tags"] == {"x": 2}


def test_label_csv_is_an_edit_too(store, run, tmp_path):
    before = state(store)
    paths = [r[0] for r in query(store, "SELECT path FROM items ORDER BY item_id LIMIT 3")]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in zip(paths, ["roses", "x", "y"])))
    out = run("label", "--task", "flowers", "--csv", csv, "--store", store).output
    assert "edit 1; undo: featstore undo --edit 1" in out
    run("label", "--task", "other", "--csv", csv, "--store", store)
    rows = featstore.open(store).history()
    assert [r["action"] for r in rows] == ["label-csv", "label-csv"]
    assert rows[1]["summary"] == "3 items labelled in 'flowers' from labels.csv" and rows[0]["count"] == 3
    run("undo", "--store", store)
    run("undo", "--store", store)
    assert state(store) == before                        # the new task's labels gone, the changed ones back


def test_an_edit_keeps_the_computed_map(store, tmp_path):
    """A label or tag edit moves the store's generation on, but the map's points are the same: the computed map is
    reused, not recomputed (t-SNE takes half a minute on a large set)."""
    from featstore.apps.map2d import map_points
    from featstore.store.db import Store

    cache = tmp_path / "maps"
    with Store.open(store) as st:
        s, generation = st.sets()[0], st.generation()
        before = map_points(st, s, cache, generation, "pca")
    files = list(cache.glob("*-pca.npz"))
    stamp = files[0].stat().st_mtime_ns
    fs = featstore.open(store)
    fs.tag(ids_of(store, "roses")[:3], "red")
    fs.set_labels("flowers", ids_of(store, "daisy")[:2], "tulips")
    with Store.open(store) as st:
        assert st.generation() > generation
        after = map_points(st, s, cache, st.generation(), "pca")
    assert list(cache.glob("*-pca.npz")) == files and files[0].stat().st_mtime_ns == stamp
    assert (after["item_id"] == before["item_id"]).all() and (after["xy"] == before["xy"]).all()


def test_select_offers_no_excluded_item(store, run):
    """An excluded item is neither counted as labelled nor offered as a candidate to label next."""
    daisies, roses = ids_of(store, "daisy")[:3], ids_of(store, "roses")[:2]
    run("exclude", "--ids", ",".join(map(str, daisies)), "--reason", "duplicate", "--store", store)
    run("label", "--task", "flowers", "--unset", "--ids", ",".join(map(str, roses)), "--store", store)
    out = json.loads(run("select", "-n", "200", "--store", store, "--json").stdout)
    assert sorted(it["item_id"] for it in out["items"]) == sorted(roses) and out["pool"] == 2
    every = json.loads(run("select", "-n", "200", "--include-labelled", "--store", store, "--json").stdout)
    assert every["pool"] == 100 - 3 and not {it["item_id"] for it in every["items"]} & set(daisies)
