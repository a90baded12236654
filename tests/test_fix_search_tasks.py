"""Rows that come from one item (content stored at several paths), and which task's labels a command reads."""
import json
import shutil

import pytest
from PIL import Image

from conftest import embed_into_new_store, query, sample_images


def _json(result):
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def copies(tmp_path_factory, home):
    """The same photo at two paths whose first item id and first path belong to different items, with different
    labels: z_first/roses/shared.jpg is embedded first (lower item id), a_second/tulips/shared.jpg later (smaller
    path). A re-encoded copy of the photo makes it part of a near-duplicate group."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("copies")
    photos = sample_images(4)
    shared = photos[0]
    for folder, cls, picks in (("z_first", "roses", photos[1:6]), ("a_second", "tulips", photos[6:11])):
        (root / folder / cls).mkdir(parents=True)
        for p in picks:
            shutil.copy2(p, root / folder / cls / p.name)
        shutil.copy2(shared, root / folder / cls / "shared.jpg")
    Image.open(shared).convert("RGB").save(root / "a_second" / "tulips" / "reenc.jpg", quality=90)
    store = root / "store"
    for folder in ("z_first", "a_second"):
        r = CliRunner().invoke(cli, ["embed", str(root / folder), "--task", "flowers", "--store", str(store),
                                     "--no-progress"])
        assert r.exit_code == 0, r.output
    return root, store


def _item_rows(store):
    return {r[0]: r[1:] for r in query(store, "SELECT i.item_id, i.path, l.label FROM items i "
                                              "LEFT JOIN labels l ON l.path = i.path AND l.task = 'flowers'")}


def test_search_rows_come_from_one_item(run, copies):
    root, store = copies
    z, a = str(root / "z_first" / "roses" / "shared.jpg"), str(root / "a_second" / "tulips" / "shared.jpg")
    ids = {p: i for i, p in query(store, "SELECT item_id, path FROM items")}
    assert ids[z] < ids[a] and a < z                 # first id and first path are different items
    items = _item_rows(store)
    out = _json(run("search", "--like", z, "-k", "5", "--store", store, "--json"))
    top = out["results"][0]
    assert (top["path"], top["copies"]) == (a, 2)                 # the first path by name ...
    assert (top["item_id"], top["label"]) == (ids[a], "tulips")   # ... with that item's own id and label
    for r in out["results"]:
        assert items[r["item_id"]] == (r["path"], r["label"]), r
    # --csv prints the same item
    lines = run("search", "--like", z, "-k", "1", "--csv", "--store", store).stdout.splitlines()
    assert lines[1].split(",")[3:] == [str(ids[a]), a, "tulips"]


def test_where_shows_the_copy_that_passes(run, copies):
    root, store = copies
    z = str(root / "z_first" / "roses" / "shared.jpg")
    items = _item_rows(store)
    out = _json(run("search", "--like", z, "-k", "3", "--where", "path LIKE '%z_first%'", "--store", store,
                    "--json"))
    assert out["results"][0]["path"] == z and out["results"][0]["label"] == "roses"
    for r in out["results"]:
        assert "z_first" in r["path"] and items[r["item_id"]] == (r["path"], r["label"]), r


def test_duplicates_groups_and_leakage_rows_come_from_one_item(run, copies):
    root, store = copies
    items = _item_rows(store)
    out = _json(run("duplicates", "--store", store, "--json"))
    group = next(g for g in out["near_groups"] if any(it["path"].endswith("reenc.jpg") for it in g["items"]))
    for it in group["items"]:
        assert items[it["item_id"]] == (it["path"], it["label"]), it
    assert str(root / "a_second" / "tulips" / "shared.jpg") in [it["path"] for it in group["items"]]


# ---- which task ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory, home):
    """The bundled sample (task flowers) plus a second task, colour, labelling every item: a tie."""
    store = embed_into_new_store(tmp_path_factory, "two-tasks")
    paths = [p for (p,) in query(store, "SELECT path FROM items WHERE status = 'ok' ORDER BY path")]
    csv = store.parent / "colour.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{'red' if i % 2 else 'blue'}\n" for i, p in enumerate(paths)))
    from click.testing import CliRunner

    from featstore.cli.main import cli

    r = CliRunner().invoke(cli, ["label", "--task", "colour", "--csv", str(csv), "--store", str(store)])
    assert r.exit_code == 0, r.output
    return store


SEVERAL = "Error: several tasks in this store (colour, flowers): pass --task"


@pytest.mark.parametrize("args", [["search", "--id", "1", "--where", "label = 'roses'"], ["fit-head"],
                                  ["duplicates"]])
def test_several_tasks_need_task(run, two_tasks, args):
    r = run(*args, "--store", two_tasks, ok=False)
    assert r.exit_code == 1 and r.output.strip() == SEVERAL, r.output


def test_where_matching_nothing_names_the_task(run, two_tasks):
    r = run("search", "--id", "1", "--task", "colour", "--where", "label = 'roses'", "--store", two_tasks, "--json")
    out = json.loads(r.stdout)
    assert out["results"] == [] and out["passing"] == 0 and out["task"] == "colour"
    assert "task 'colour'" in out["note"]
    assert r.stderr.strip() == out["note"] and len(r.stderr.strip().splitlines()) == 1
    human = run("search", "--id", "1", "--task", "colour", "--where", "label = 'roses'", "--store", two_tasks)
    assert "matched no items" in human.stderr and "task 'colour'" in human.stderr
    roses = _json(run("search", "--id", "1", "--task", "flowers", "--where", "label = 'roses'", "-k", "3",
                      "--store", two_tasks, "--json"))
    assert len(roses["results"]) == 3 and {r["label"] for r in roses["results"]} == {"roses"} and not roses["note"]


def test_one_task_is_the_default(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    out = _json(run("search", "--id", "1", "-k", "3", "--where", "label = 'roses'", "--store", store, "--json"))
    assert out["task"] == "flowers" and {r["label"] for r in out["results"]} == {"roses"}
    fit = _json(run("fit-head", "--store", store, "--json"))
    assert fit["task"] == "flowers"
    assert _json(run("duplicates", "--store", store, "--json"))["label_task"] == "flowers"


def test_a_copy_takes_width_and_height_from_one_item(run, tmp_path):
    """Two stored copies whose recorded sizes disagree (as an older featstore could leave them): a new copy takes
    width and height from one of them, never the larger of each from different items."""
    import duckdb

    photo = sample_images(1)[0]
    folder, store = tmp_path / "f", tmp_path / "store"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy2(photo, folder / name)
    run("embed", folder, "--store", store, "--no-progress")
    con = duckdb.connect(str(store / "store.duckdb"))
    con.execute("UPDATE items SET width = 300, height = 100 WHERE path LIKE '%/a.jpg'")
    con.execute("UPDATE items SET width = 100, height = 300 WHERE path LIKE '%/b.jpg'")
    con.close()
    shutil.copy2(photo, folder / "c.jpg")
    run("embed", folder, "--store", store, "--no-progress")
    assert query(store, "SELECT width, height FROM items WHERE path LIKE '%/c.jpg'") == [(300, 100)]
