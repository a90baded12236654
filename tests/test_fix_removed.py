"""Files that vanish from an embedded folder (or rows from a text table) are marked `removed` by the next embed of
that source: out of search, heads, duplicates, counts and the FAISS index (unless a live path shares the content),
shown by stats, dropped by gc; a file that comes back is embedded again."""
import json
import shutil

from conftest import SAMPLE, query


def _json(result):
    return json.loads(result.stdout)


def _status(store, path) -> tuple:
    rows = query(store, f"SELECT item_id, status FROM items WHERE path = '{path}'")
    return rows[0] if rows else None


def test_vanished_files_are_removed_then_gc_and_return(run, small_folder, tmp_path):
    import badfiles

    store, keep = tmp_path / "store", tmp_path / "keep"
    keep.mkdir()
    x, y, z = (sorted((small_folder / c).glob("*.jpg"))[0] for c in ("roses", "daisy", "tulips"))
    x_copy = x.with_name(x.stem + "_copy.jpg")            # the same bytes at a second, live path
    shutil.copy2(x, x_copy)
    # a second folder whose name starts like the first: embedding one must never touch the other's items
    other = tmp_path / (small_folder.name + "2")
    other.mkdir()
    b1, b2 = (other / p.name for p in sorted((SAMPLE / "sunflowers").glob("*.jpg"))[10:12])   # new contents
    for p in (b1, b2):
        shutil.copy2(SAMPLE / "sunflowers" / p.name, p)
    first = _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))
    assert first["listed"] == 41 and first["removed"] == 0
    run("embed", other, "--store", store, "--no-progress")
    set_id = first["set_id"]
    ids = {p: _status(store, p)[0] for p in (x, y, z)}
    run("tag", "blurry", "--ids", f"{ids[x]},{ids[z]}", "--store", store)        # curation of items that vanish
    run("exclude", "--ids", f"{ids[y]},{ids[z]}", "--store", store)
    for p in (x, y, z):
        shutil.copy2(p, keep / p.name)
        p.unlink()
    b1.unlink()

    out = run("embed", small_folder, "--store", store, "--no-progress").output
    assert "removed (vanished from the folder)" in out and f"removed: {x}" in out
    assert {p: _status(store, p)[1] for p in (x, y, z, x_copy, b1, b2)} == {
        x: "removed", y: "removed", z: "removed", x_copy: "ok", b1: "ok", b2: "ok"}      # b1: not this folder
    assert _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))["removed"] == 0

    st = _json(run("stats", "--store", store, "--json"))
    assert st["items"] == {"ok": 40, "removed": 3}
    assert st["tasks"]["flowers"] == 38 and st["duplicates"] == [] and st["distinct_contents"] == 40
    assert st["embedding_sets"][0]["live_vectors"] == 40 and st["embedding_sets"][0]["vectors"] == 42
    rep = _json(run("verify", "--store", store, "--json"))
    assert rep["sets"][0]["indexed"] == 40 and rep["sets"][0]["index"] == "in sync"
    rep = _json(run("verify", "--rehash", "--store", store, "--json", ok=False))
    assert rep["files"]["vanished"] == [str(b1)] and rep["files"]["checked"] == 40   # only live items checked

    hits = _json(run("search", "--like", keep / x.name, "-k", "5", "--store", store, "--json"))["results"]
    assert hits[0]["path"] == str(x_copy) and hits[0]["score"] > 0.999      # the shared vector stays live
    hits = _json(run("search", "--like", keep / y.name, "-k", "50", "--store", store, "--json"))["results"]
    assert len(hits) == 40 and not {h["path"] for h in hits} & {str(x), str(y), str(z)}
    gone = run("search", "--id", ids[y], "--store", store, ok=False)        # nor a query by its id
    assert gone.exit_code == 1 and f"item {ids[y]} ({y}) was removed" in gone.output
    assert "Traceback" not in gone.output
    assert _json(run("duplicates", "--store", store, "--json"))["exact"] == []
    fit = _json(run("fit-head", "--task", "flowers", "--store", store, "--json"))
    assert fit["metrics"]["n_train"] + fit["metrics"]["n_test"] == 38           # one row per live content

    # a write that leaves the live vectors alone (a corrupt file) restamps the index, does not rewrite it
    index_file = store / "index" / f"{set_id}.faiss"
    before = index_file.stat().st_mtime_ns, index_file.read_bytes()
    (small_folder / "broken.jpg").write_bytes(badfiles.truncated_jpeg())
    assert _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))["failed"] == 1
    assert (index_file.stat().st_mtime_ns, index_file.read_bytes()) == before
    assert _json(run("verify", "--store", store, "--json"))["sets"][0]["index"] == "in sync"

    # z comes back before gc: its record is revived, its stored vector live again (no backbone run)
    shutil.copy2(keep / z.name, z)
    (small_folder / "broken.jpg").unlink()
    back = _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))
    assert (back["copies"], back["embedded"], back["removed"]) == (1, 0, 1)       # removed: broken.jpg
    assert _status(store, z) == (ids[z], "ok")
    hits = _json(run("search", "--like", z, "-k", "1", "--store", store, "--json"))["results"]
    assert hits[0]["path"] == str(z) and hits[0]["score"] > 0.999
    assert _json(run("verify", "--store", store, "--json"))["sets"][0]["indexed"] == 41

    dry = _json(run("gc", "--dry-run", "--store", store, "--json"))
    assert dry["removed_items"] == sorted([str(x), str(y), str(small_folder / "broken.jpg")])
    assert dry["removed_vectors"][set_id] == 1                      # y's; x's content is x_copy's too
    assert _status(store, y)[1] == "removed"                        # a dry run changes nothing
    out = run("gc", "--store", store).output
    assert "removed 3 removed items" in out and f"  {y}" in out
    assert _status(store, x) is None and _status(store, y) is None
    assert query(store, f"SELECT count(*) FROM labels WHERE path IN ('{x}', '{y}')") == [(0,)]
    assert query(store, "SELECT path FROM tags UNION ALL SELECT path FROM exclusions") == [(str(z),)] * 2
    assert query(store, f"SELECT count(*) FROM emb_{set_id}") == [(41,)]
    rep = _json(run("verify", "--store", store, "--json"))
    assert rep["sets"][0]["indexed"] == rep["sets"][0]["live"] == 41 and rep["sets"][0]["index"] == "in sync"

    # y comes back after gc: embedded again as a new item
    shutil.copy2(keep / y.name, y)
    again = _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))
    assert (again["embedded"], again["removed"]) == (1, 0)
    assert _status(store, y)[1] == "ok" and _status(store, y)[0] != ids[y]
    hits = _json(run("search", "--like", y, "-k", "1", "--store", store, "--json"))["results"]
    assert hits[0]["path"] == str(y) and hits[0]["score"] > 0.999


def test_a_file_on_disk_but_not_listed_is_not_vanished(tmp_path):
    """Only a file the file system says is gone has vanished (a folder that could not be listed loses nothing),
    and only names the listing would list are in scope (an image folder's embed leaves its .txt items alone)."""
    from featstore.embed.source import is_image_name
    from featstore.store.vanished import folder_scope

    photo = tmp_path / "a" / "x.jpg"
    photo.parent.mkdir()
    shutil.copy2(sorted((SAMPLE / "roses").glob("*.jpg"))[0], photo)
    scope = folder_scope(str(tmp_path), [], is_image_name)
    assert not scope.vanished(str(photo))                            # there, just not in this listing
    assert scope.vanished(str(tmp_path / "a" / "gone.jpg"))
    assert scope.vanished(str(tmp_path / "a" / "x.jpg" / "under-a-file.jpg"))
    assert not scope.vanished(str(tmp_path / "a" / "gone.txt"))      # a text item: not this listing's


def test_rows_dropped_from_a_text_table_are_removed(run, home, tmp_path):
    table, store = tmp_path / "notes.csv", tmp_path / "store"
    rows = ["Rain is expected across the north tomorrow.", "The team won the cup final.",
            "Markets fell as rates rose.", "A new species of frog was found."]
    table.write_text("text\n" + "".join(f'"{t}"\n' for t in rows))
    assert _json(run("embed", table, "--store", store, "--json", "--no-progress"))["embedded"] == 4
    table.write_text("text\n" + "".join(f'"{t}"\n' for t in rows[:3]))
    out = _json(run("embed", table, "--store", store, "--json", "--no-progress"))
    assert out["removed"] == 1 and out["removed_paths"] == [f"{table}#4"] and out["embedded"] == 0
    assert _status(store, f"{table}#4")[1] == "removed"
    hits = _json(run("search", "--text", "frogs and amphibians", "-k", "10", "--store", store, "--json"))["results"]
    assert len(hits) == 3 and all(h["text"] != rows[3] for h in hits)
    table.write_text("text\n" + "".join(f'"{t}"\n' for t in rows))
    back = _json(run("embed", table, "--store", store, "--json", "--no-progress"))
    assert (back["copies"], back["embedded"], back["removed"]) == (1, 0, 0)
    assert _status(store, f"{table}#4")[1] == "ok"
    # dropped again, then gc: the item, its vector and its stored text go; the other three texts stay
    table.write_text("text\n" + "".join(f'"{t}"\n' for t in rows[:3]))
    run("embed", table, "--store", store, "--json", "--no-progress")
    report = _json(run("gc", "--store", store, "--json"))
    assert report["removed_items"] == [f"{table}#4"] and report["removed_texts"] == 1
    assert sorted(r[0] for r in query(store, "SELECT text FROM texts")) == sorted(rows[:3])


def test_gc_leaves_no_freed_vec_id_in_an_index(run, small_folder, tmp_path):
    """A vec_id gc frees can be given to the next new vector; an index still holding the freed id's old vector
    (a run killed between its write and its index refresh) would then answer with the new item's path. gc
    brings the indexes in step, so the old vector is gone before its id is reused."""
    from featstore.store.db import Store

    store = tmp_path / "store"
    first = _json(run("embed", small_folder, "--store", store, "--json", "--no-progress"))
    top, old_hash = query(store, f"SELECT vec_id, hash FROM emb_{first['set_id']} ORDER BY vec_id DESC LIMIT 1")[0]
    path = query(store, f"SELECT path FROM items WHERE hash = '{old_hash}'")[0][0]
    keep = tmp_path / "old.jpg"
    shutil.copy2(path, keep)
    with Store.open(store, write=True) as st:     # what a killed run leaves: the item rewritten, index not refreshed
        with st.transaction():
            st.con.execute("UPDATE items SET hash = 'x', status = 'failed', error = 'e' WHERE path = ?", [path])
            st._bump_generation()
    assert _json(run("gc", "--store", store, "--json"))["removed_vectors"][first["set_id"]] == 1
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy2(sorted((SAMPLE / "sunflowers").glob("*.jpg"))[-1], new / "fresh.jpg")
    run("embed", new, "--store", store, "--no-progress")
    assert query(store, f"SELECT vec_id FROM emb_{first['set_id']} WHERE hash NOT IN (SELECT hash FROM items "
                        f"WHERE path LIKE '{small_folder}%')") == [(top,)]           # the freed id, reused
    hits = _json(run("search", "--like", keep, "-k", "1", "--store", store, "--json"))["results"]
    assert hits[0]["path"] != str(new / "fresh.jpg") and hits[0]["score"] < 0.999
