"""End to end on real photos and real weights: embed -> fit-head -> predict -> search, re-embed, bad input."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import badfiles
from conftest import SAMPLE, query

PARITY = Path(__file__).parents[1] / "featstore" / "data" / "parity"


def items(store: Path) -> dict:
    rows = query(store, "SELECT path, status, error, hash FROM items")
    return {r[0]: {"status": r[1], "error": r[2], "hash": r[3]} for r in rows}


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory, home):
    """The bundled sample (100 photos, 5 classes) embedded once, with a head fitted."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    store = tmp_path_factory.mktemp("sample") / "store"
    r = CliRunner().invoke(cli, ["embed", str(SAMPLE), "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    r = CliRunner().invoke(cli, ["fit-head", "--task", "flowers", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    return store, summary, json.loads(r.stdout)


def test_embed_sample(sample_store):
    store, summary, _ = sample_store
    assert summary["embedded"] == 100 and summary["failed"] == 0 and summary["task"] == "flowers"
    rows = items(store)
    assert len(rows) == 100 and all(r["status"] == "ok" for r in rows.values())


def test_fit_head_metrics(sample_store):
    _, _, out = sample_store
    m = out["metrics"]
    assert out["classes"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert m["n_train"] == 80 and m["n_test"] == 20 and m["cv"]["folds"] == 5
    assert m["test_accuracy"] >= 0.8                 # chance is 0.2
    assert m["cv"]["accuracy_mean"] >= 0.6
    assert sum(map(sum, m["confusion"]["matrix"])) == 20
    assert set(m["per_class"]) == set(out["classes"])


def test_fit_head_human_output(run, sample_store):
    store, _, _ = sample_store
    out = run("fit-head", "--task", "flowers", "--name", "flowers-copy", "--store", store).output
    assert "by 5-fold CV" in out and "held-out accuracy" in out and "confusion matrix" in out
    assert "precision" in out and "tulips" in out


def test_predict_new_files(run, sample_store):
    store, _, _ = sample_store
    out = json.loads(run("predict", "--head", "flowers", *sorted(PARITY.glob("*.jpg")), "--add", "--store", store,
                         "--json").stdout)
    preds = out["predictions"]
    assert out["embedded_now"] == 5 and len(preds) == 5
    correct = sum(Path(p["path"]).name.split("_")[0] == p["label"] for p in preds)
    assert correct >= 3, preds                        # 5 unseen photos, one per class; chance would be 1
    assert all(0.2 < p["probability"] <= 1 and abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds)
    again = json.loads(run("predict", "--head", "flowers", *sorted(PARITY.glob("*.jpg")), "--store", store,
                           "--json").stdout)
    assert again["embedded_now"] == 0                  # embedded once, kept (--add)
    assert [p["label"] for p in again["predictions"]] == [p["label"] for p in preds]
    csv_out = run("predict", "--head", "flowers", sorted(PARITY.glob("*.jpg"))[0], "--store", store, "--csv").output
    assert csv_out.splitlines()[0] == "path,label,probability,value,status,error"


def test_predict_reports_bad_file(run, sample_store, tmp_path):
    store, _, _ = sample_store
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(badfiles.truncated_jpeg())
    r = run("predict", "--head", "flowers", bad, "--store", store, "--json", ok=False)
    assert r.exit_code == 1      # no file could be predicted (the rows still say why)
    p = json.loads(r.stdout)["predictions"][0]
    assert p["status"] == "failed" and "truncated" in p["error"] and p["label"] is None


def test_search_like_and_by_id(run, sample_store):
    store, _, _ = sample_store
    query = sorted((SAMPLE / "sunflowers").glob("*.jpg"))[3]
    out = json.loads(run("search", "--like", query, "-k", "10", "--store", store, "--json").stdout)
    res = out["results"]
    assert len(res) == 10 and res[0]["path"] == str(query.resolve()) and res[0]["score"] > 0.9999
    assert all(a["score"] >= b["score"] for a, b in zip(res, res[1:]))
    by_id = json.loads(run("search", "--id", res[0]["item_id"], "-k", "5", "--store", store, "--json").stdout)
    assert len(by_id["results"]) == 5 and all(r["item_id"] != res[0]["item_id"] for r in by_id["results"])
    assert [r["item_id"] for r in by_id["results"]] == [r["item_id"] for r in res[1:6]]
    human = run("search", "--like", query, "-k", "3", "--store", store).output
    assert "sunflowers" in human and "score" in human


def test_neighbours_share_labels(sample_store):
    """Leave-one-out over the 100-photo sample: top-5 neighbours share the query's label far above chance (0.2)."""
    import numpy as np

    from featstore.search.query import search
    from featstore.store.db import Store

    with Store.open(sample_store[0]) as st:
        labels = dict(st.con.execute("SELECT i.item_id, l.label FROM items i JOIN labels l ON l.path = i.path "
                                     "WHERE l.task = 'flowers'").fetchall())
        rates = [np.mean([r["label"] == labels[i] for r in search(st, item_id=i, k=5)["results"]]) for i in labels]
    assert len(rates) == 100 and np.mean(rates) > 0.6


def test_search_new_file_not_added(run, sample_store, tmp_path):
    store, _, _ = sample_store
    from PIL import Image

    q = tmp_path / "query.png"
    Image.open(sorted((SAMPLE / "roses").glob("*.jpg"))[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(q)
    before = len(items(store))
    out = json.loads(run("search", "--like", q, "-k", "3", "--store", store, "--json").stdout)
    assert len(out["results"]) == 3 and out["results"][0]["score"] < 0.9999
    assert len(items(store)) == before


def test_reembed_is_a_noop(run, sample_store):
    store, _, _ = sample_store
    out = json.loads(run("embed", SAMPLE, "--store", store, "--json").stdout)
    assert out["embedded"] == 0 and out["already"] == 100
    human = run("embed", SAMPLE, "--store", store).output
    assert "backbone ran on 0 images" in human


def test_copies_are_not_reembedded(run, home, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store)
    copy = tmp_path / "copies" / "flowers"
    shutil.copytree(small_folder, copy)
    out = json.loads(run("embed", copy, "--store", store, "--json").stdout)
    assert out["embedded"] == 0 and out["copies"] == 40
    rows = items(store)
    assert len(rows) == 80 and len({r["hash"] for r in rows.values()}) == 40
    stats = json.loads(run("stats", "--store", store, "--json").stdout)
    assert stats["duplicate_paths"] == 40 and len(stats["duplicates"]) == 40
    assert all(len(g["paths"]) == 2 for g in stats["duplicates"])
    assert "same content at 2 paths" in run("stats", "--store", store).output


def test_changed_file_supersedes_old_vector(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store)
    target = sorted((small_folder / "daisy").glob("*.jpg"))[0]
    old_query = tmp_path / "old.jpg"
    shutil.copy2(target, old_query)
    replacement = sorted((small_folder / "tulips").glob("*.jpg"))[0]
    target.write_bytes(replacement.read_bytes() + b"\0")       # new content at the same path
    os.utime(target, (1e9, 1e9))
    out = json.loads(run("embed", small_folder, "--store", store, "--json").stdout)
    assert out["embedded"] == 1
    res = json.loads(run("search", "--like", old_query, "-k", "40", "--store", store, "--json").stdout)["results"]
    assert res[0]["score"] < 0.9999                            # the old vector no longer comes back
    assert len(res) == 40                                      # 40 live contents, the superseded one excluded


def test_bad_inputs_recorded_and_run_goes_on(run, tmp_path, small_folder):
    root = badfiles.write_bad_folder(small_folder)
    store = tmp_path / "store"
    out = json.loads(run("embed", root, "--store", store, "--json").stdout)
    rows = items(store)
    by_name = {Path(p).name: r for p, r in rows.items()}
    for name, (_, status) in badfiles.BAD.items():
        assert by_name[name]["status"] == status, (name, by_name[name])
    assert "truncated" in by_name["truncated.jpg"]["error"]
    assert "empty" in by_name["empty.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]
    assert "decompression" in by_name["bomb.png"]["error"]
    assert by_name["caf\\xe9.jpg"]["status"] == "ok"          # non-UTF-8 name stored escaped
    assert "cannot read" in by_name["unreadable.jpg"]["error"]
    assert any("symlink loop" in w for w in out["warnings"])
    assert out["failed"] == 5 and sum(r["status"] == "ok" for r in rows.values()) == 40 + 9
    again = json.loads(run("embed", root, "--store", store, "--json").stdout)
    assert again["embedded"] == 0 and again["failed_before"] == 5
    human = run("embed", root, "--store", store, "--retry-failed").output
    assert "failed: " in human and "bomb.png" in human
    stats = json.loads(run("stats", "--store", store, "--json").stdout)
    assert stats["items"] == {"failed": 5, "ok": 49} and len(stats["failed"]) == 5


def test_file_deleted_between_listing_and_reading(home, small_folder, tmp_path):
    from featstore.models.catalog import resolve
    from featstore.embed.local import embed_files
    from featstore.embed.backbones import open_backbone
    from featstore.embed.source import scan_folder
    from featstore.store.db import Store

    files, _ = scan_folder(small_folder)
    gone = files[3]
    os.unlink(gone.path)
    spec = resolve(None)
    backbone, eset = open_backbone(spec, device="cpu")
    with Store.open(tmp_path / "store", write=True, create=True) as store:
        summary = embed_files(store, files, backbone, eset, spec.preprocess, progress=False)
    assert summary.embedded == 39 and summary.failed == 1
    assert "vanished" in dict(summary.failures)[gone.key]


def test_unreadable_file_without_root(run, small_folder, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads chmod-000 files; covered by the /proc/self/mem case in the bad-input test")
    f = sorted((small_folder / "roses").glob("*.jpg"))[0]
    f.chmod(0)
    out = json.loads(run("embed", small_folder, "--store", tmp_path / "s", "--json").stdout)
    assert out["failed"] == 1 and "Permission denied" in out["failures"][0][1]


def test_empty_folder(run, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    out = run("embed", tmp_path / "empty", "--store", tmp_path / "s").output
    assert "no image files found" in out and "backbone ran on 0 images" in out


def test_user_errors_are_one_line(run, sample_store):
    store, _, _ = sample_store
    cases = [
        (["fit-head", "--task", "birds"], "unknown task 'birds'; known: flowers"),
        (["predict", "--head", "birds", str(PARITY)], "unknown head 'birds'; known: flowers"),
        (["search", "--like", str(sorted(PARITY.glob("*.jpg"))[0]), "--model", "resnet"], "unknown model 'resnet'"),
        (["search", "-k", "3"], "give a query: --like FILE|FOLDER"),
        (["search", "--id", "99999"], "no item with id 99999"),
    ]
    for args, message in cases:
        r = run(*args, "--store", store, ok=False)
        assert r.exit_code == 1 and message in r.output, (args, r.output)
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = run("embed", SAMPLE, "--model", "resnet50", "--store", store, ok=False)
    assert r.exit_code == 1 and "known: all-minilm-l6-v2, efficientnet-lite0" in r.output
    r = run("search", "--id", "1", "--store", store.parent / "nowhere", ok=False)
    assert r.exit_code == 1 and "no featstore store" in r.output


def _cli(args, home, **kw):
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "featstore.cli.main", *map(str, args)], env=env,
                          capture_output=True, text=True, **kw)


def test_embedding_does_not_import_torch(home, small_folder, tmp_path):
    code = ("import sys; from featstore.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n")
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    for args in (["embed", small_folder, "--store", tmp_path / "s", "--no-progress"],
                 ["fit-head", "--task", "flowers", "--store", tmp_path / "s"],
                 ["search", "--like", PARITY / sorted(os.listdir(PARITY))[1], "--store", tmp_path / "s"],
                 ["predict", "--head", "flowers", PARITY, "--store", tmp_path / "s"]):
        p = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith("NO_TORCH"), (args, p.stdout[-300:])


def test_second_writer_and_reader_get_a_clear_message(home, sample_store):
    from featstore.store.db import Store

    store, _, _ = sample_store
    with Store.open(store, write=True):
        w = _cli(["embed", SAMPLE, "--store", store, "--no-progress"], home)
        assert w.returncode == 1 and "is being written by PID" in w.stderr and "Traceback" not in w.stderr
        r = _cli(["search", "--id", "1", "--store", store], home)
        assert r.returncode == 1 and "is being written" in r.stderr
    r = _cli(["search", "--id", "1", "--store", store, "--json"], home)
    assert r.returncode == 0, r.stderr


def test_second_writer_waits_with_wait_flag(home, sample_store):
    import threading
    import time

    from featstore.store.db import Store

    store, _, _ = sample_store
    holder = Store.open(store, write=True)
    released = []

    def release():
        time.sleep(3)
        released.append(time.time())
        holder.close()

    threading.Thread(target=release).start()
    w = _cli(["embed", SAMPLE, "--store", store, "--no-progress", "--wait", "--json"], home)
    assert w.returncode == 0, w.stderr
    assert released and json.loads(w.stdout)["already"] == 100


def test_stale_index_is_rebuilt(run, sample_store):
    store, _, _ = sample_store
    for f in (store / "index").glob("*.json"):
        f.write_text(json.dumps({"generation": -1, "count": 0}))
    for f in (store / "index").glob("*.faiss"):
        f.write_bytes(b"garbage")
    out = json.loads(run("search", "--id", "1", "-k", "3", "--store", store, "--json").stdout)
    assert len(out["results"]) == 3
    stats = json.loads(run("stats", "--store", store, "--json").stdout)
    s = stats["embedding_sets"][0]
    assert s["index"]["count"] == s["live_vectors"]


def test_newer_schema_refused(sample_store, tmp_path):
    from featstore.errors import FeatstoreError
    from featstore.store.db import Store

    copy = tmp_path / "copy"
    shutil.copytree(sample_store[0], copy)
    con = duckdb.connect(str(copy / "store.duckdb"))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(FeatstoreError, match="newer featstore"):
        Store.open(copy)


def test_device_cuda_fails_loudly_without_cuda(run, small_folder, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider; the GPU path is exercised instead")
    r = run("embed", small_folder, "--device", "cuda", "--store", tmp_path / "s", ok=False)
    assert r.exit_code == 1 and "no CUDA provider" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s" / "store.duckdb").exists()     # refused before anything was written


def test_image_manifest_source(run, small_folder, tmp_path):
    """A CSV/TSV/Parquet with a `path` column (relative to the table) and `label`: a missing file is a failed
    item, the rest are embedded and labelled; the summary says where the labels came from."""
    files = sorted(small_folder.rglob("*.jpg"))[:6]
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in files] + [("flowers/none.jpg", "roses")]
    (tmp_path / "m.tsv").write_text("path\tlabel\n" + "".join(f"{p}\t{lab}\n" for p, lab in rows))
    r = run("embed", tmp_path / "m.tsv", "--store", tmp_path / "s", "--no-progress")
    assert "7 image files listed" in r.output and "from the manifest" in r.output
    got = dict(query(tmp_path / "s", "SELECT path, status FROM items"))
    assert got.pop(str(tmp_path / "flowers" / "none.jpg")) == "failed" and set(got.values()) == {"ok"}
    assert query(tmp_path / "s", "SELECT count(*) FROM labels WHERE task = 'm'")[0][0] == 7
    duckdb.connect().execute(f"COPY (SELECT * FROM read_csv('{tmp_path / 'm.tsv'}', delim = '\\t')) "
                             f"TO '{tmp_path / 'm.parquet'}' (FORMAT parquet)")
    out = json.loads(run("embed", tmp_path / "m.parquet", "--store", tmp_path / "s", "--json").stdout)
    assert out["listed"] == 7 and out["embedded"] == 0 and out["task"] == "m"


def test_backbone_at_another_input_size_end_to_end(run, small_folder, tmp_path):
    """`embed --input-size 288` (= --model efficientnet-lite0@288) is a set of its own beside the default one;
    fit-head, predict and search take it by name, and files predicted later are embedded at 288 as well."""
    import numpy as np
    from PIL import Image

    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported, photo_batch

    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    out = json.loads(run("embed", small_folder, "--input-size", "288", "--store", store, "--json").stdout)
    assert out["model"] == "efficientnet-lite0@288" and out["embedded"] == 40
    again = json.loads(run("embed", small_folder, "--model", "efficientnet-lite0@288", "--store", store,
                           "--json").stdout)
    assert again["embedded"] == 0 and again["set_id"] == out["set_id"]          # the two spellings: one set
    sets = dict(query(store, "SELECT model, set_id FROM embedding_sets"))
    assert set(sets) == {"efficientnet-lite0", "efficientnet-lite0@288"}
    fit = json.loads(run("fit-head", "--task", "flowers", "--model", "efficientnet-lite0@288", "--name", "at288",
                         "--store", store, "--json").stdout)
    assert fit["model"] == "efficientnet-lite0@288" and fit["set_id"] == out["set_id"]
    photos = sorted(PARITY.glob("*.jpg"))
    pred = json.loads(run("predict", "--head", "at288", *photos, "--add", "--store", store, "--json").stdout)
    assert pred["embedded_now"] == len(photos)
    spec = resolve("efficientnet-lite0@288")
    backbone = Backbone(ensure_exported(spec), device="cpu")
    assert backbone.session.get_inputs()[0].shape[2:] == [288, 288]
    expected = backbone.run(photo_batch(spec.preprocess))
    stored = query(store, f"""SELECT i.path, e.vector FROM emb_{out['set_id']} e JOIN items i ON i.hash = e.hash
                              WHERE i.path LIKE '%featstore/data/parity/%' ORDER BY i.path""")
    assert [Path(p).name for p, _ in stored] == [p.name for p in photos]
    assert np.abs(np.array([v for _, v in stored]) - expected).max() <= 1e-4
    found = json.loads(run("search", "--like", photos[0], "-k", "3", "--model", "efficientnet-lite0@288",
                           "--store", store, "--json").stdout)
    assert found["model"] == "efficientnet-lite0@288" and found["results"][0]["score"] > 0.9999
    con = duckdb.connect(str(store / "store.duckdb"))             # the set's ONNX file moved away: the catalogue
    con.execute("UPDATE embedding_sets SET onnx_path = '/gone/x.onnx' WHERE model = 'efficientnet-lite0@288'")
    con.close()                                                    # export for NAME@SIZE stands in (same bytes)
    mirrored = tmp_path / "mirrored.jpg"
    Image.open(photos[0]).transpose(Image.FLIP_LEFT_RIGHT).save(mirrored, quality=90)
    pred = json.loads(run("predict", "--head", "at288", mirrored, "--store", store, "--json").stdout)
    assert pred["embedded_now"] == 1 and pred["predictions"][0]["status"] == "ok"
