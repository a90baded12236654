"""Embedding sets never mix; gc and verify; a user's own ONNX file; SIGKILL mid-run loses nothing."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import SAMPLE, query


def vectors(store) -> tuple[dict, list]:
    """({(set table, hash): vector}, [(path, hash, status)]) of a store."""
    out = {}
    for (table,) in query(store, "SELECT table_name FROM embedding_sets"):
        for h, v in query(store, f"SELECT hash, vector FROM {table}"):
            out[(table, h)] = np.asarray(v, np.float32)
    return out, query(store, "SELECT path, hash, status FROM items ORDER BY path")


def test_own_onnx_file_and_sets_do_not_mix(run, home, small_folder, tmp_path):
    store = tmp_path / "store"
    first = json.loads(run("embed", small_folder, "--store", store, "--json").stdout)
    from featstore.models.catalog import resolve
    from featstore.models.export import cached_path

    onnx = cached_path(resolve(None))            # the fp32 export (an fp16 copy may lie beside it)
    mine = tmp_path / "my-backbone.onnx"
    shutil.copy(onnx, mine)
    # same graph bytes and same preprocessing: the same embedding set, nothing recomputed
    same = json.loads(run("embed", small_folder, "--model", mine, "--input-size", 224, "--store", store,
                          "--json").stdout)
    assert same["set_id"] == first["set_id"] and same["embedded"] == 0
    # other normalisation: a new set, every image embedded again, old set untouched
    other = json.loads(run("embed", small_folder, "--model", mine, "--input-size", 224, "--mean", "120",
                           "--std", "60", "--store", store, "--json").stdout)
    assert other["set_id"] != first["set_id"] and other["embedded"] == 40
    stats = json.loads(run("stats", "--store", store, "--json").stdout)
    assert sorted(s["vectors"] for s in stats["embedding_sets"]) == [40, 40]
    r = run("embed", small_folder, "--model", mine, "--store", store, ok=False)
    assert r.exit_code == 1 and "--input-size" in r.output
    # the newest set is the default for heads; --model picks by name or set id
    head = json.loads(run("fit-head", "--task", "flowers", "--model", first["set_id"], "--store", store,
                          "--json").stdout)
    assert head["set_id"] == first["set_id"]
    # gc keeps the set the head uses and the newest; verify passes
    out = json.loads(run("gc", "--store", store, "--json").stdout)
    assert out["removed_sets"] == []
    assert json.loads(run("verify", "--store", store, "--json", "--rehash").stdout)["ok"] is True


def test_gc_removes_superseded_and_old_sets(run, small_folder, tmp_path):
    store = tmp_path / "store"
    first = json.loads(run("embed", small_folder, "--store", store, "--json").stdout)
    target = sorted((small_folder / "roses").glob("*.jpg"))[0]
    target.write_bytes(target.read_bytes() + b"changed")
    run("embed", small_folder, "--store", store)
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported

    mine = tmp_path / "mine.onnx"
    shutil.copy(ensure_exported(resolve(None)), mine)
    run("embed", small_folder, "--model", mine, "--input-size", 224, "--std", "100", "--store", store)
    dry = json.loads(run("gc", "--dry-run", "--store", store, "--json").stdout)
    assert [s["set_id"] for s in dry["removed_sets"]] == []          # newest of each model name: both kept
    vec, _ = vectors(store)
    assert sum(1 for (t, _) in vec if t == f"emb_{first['set_id']}") == 41     # 40 live + 1 superseded
    out = json.loads(run("gc", "--store", store, "--json").stdout)
    assert out["removed_vectors"][first["set_id"]] == 1
    vec, _ = vectors(store)
    assert sum(1 for (t, _) in vec if t == f"emb_{first['set_id']}") == 40
    rep = json.loads(run("verify", "--store", store, "--json").stdout)
    assert rep["ok"] and all(s["non_finite"] == 0 for s in rep["sets"])


def test_verify_reports_changed_and_vanished_files(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store)
    files = sorted((small_folder / "daisy").glob("*.jpg"))
    files[0].unlink()
    files[1].write_bytes(files[2].read_bytes())
    r = run("verify", "--rehash", "--store", store, "--json", ok=False)
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert rep["files"]["vanished"] == [str(files[0].resolve())]
    assert rep["files"]["changed"] == [str(files[1].resolve())]
    assert rep["sets"][0]["index"] == "in sync"


def _count_items(store) -> int:
    return query(store, "SELECT count(*) FROM items")[0][0]


def _wait_until_writing(store, proc, timeout=60.0):
    """Block until `proc` holds the store's writer lock (it has started up and begun embedding)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads((store / "writer.lock").read_text()).get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError("embed never started writing")


def test_sigkill_mid_run_then_resume_gives_identical_store(home, tmp_path):
    """Kill `featstore embed` with SIGKILL at 10 random moments; the resumed store equals an uninterrupted one."""
    from PIL import Image, ImageOps

    folder = tmp_path / "photos"               # 400 distinct real photos: the sample re-encoded four ways
    for src in sorted(SAMPLE.glob("*/*.jpg")):
        (folder / src.parent.name).mkdir(parents=True, exist_ok=True)
        img = Image.open(src).convert("RGB")
        for i, variant in enumerate([img, ImageOps.mirror(img)]):
            for q in (90, 75):
                variant.save(folder / src.parent.name / f"{src.stem}-{i}-{q}.jpg", quality=q)
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    cmd = [sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--batch-size", "4", "--no-progress"]
    reference = tmp_path / "reference"
    p = subprocess.Popen(cmd + ["--store", str(reference), "--json"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    _wait_until_writing(reference, p)
    start = time.monotonic()
    out, _ = p.communicate()
    assert p.returncode == 0
    # this machine's pace, from the uninterrupted run: the startup after taking the lock, then the embedding
    embedding = json.loads(out)["seconds"]
    startup = max(0.0, time.monotonic() - start - embedding)
    store = tmp_path / "killed"
    rng = random.Random(1234)
    counts = []
    for _ in range(10):
        p = subprocess.Popen(cmd + ["--store", str(store)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        _wait_until_writing(store, p)
        # a random moment of the embedding proper: 1-7% of the job into it (10 kills stay short of the end)
        time.sleep(startup + rng.uniform(0.01, 0.07) * embedding)
        p.send_signal(signal.SIGKILL)
        p.wait()
        counts.append(_count_items(store) if (store / "store.duckdb").exists() else 0)
    print("items stored at each kill:", counts)
    assert p.returncode == -signal.SIGKILL
    assert counts[-1] < 400, counts                        # every kill landed before the job was done ...
    assert len(set(counts)) > 3, counts                    # ... and most of them mid-run, after some progress
    done = subprocess.run(cmd + ["--store", str(store), "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["embedded"] == 400 - counts[-1]
    ref_vec, ref_items = vectors(reference)
    got_vec, got_items = vectors(store)
    assert got_items == ref_items and len(got_items) == 400
    assert set(got_vec) == set(ref_vec)
    assert max(float(np.abs(got_vec[k] - ref_vec[k]).max()) for k in ref_vec) <= 1e-5
    again = json.loads(subprocess.run(cmd + ["--store", str(store), "--json"], env=env, capture_output=True,
                                      text=True).stdout)
    assert again["embedded"] == 0 and again["already"] == 400
