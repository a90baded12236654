"""The throughput work (issue 4): int8 as its own embedding set, fp16 conversion, the recorded run settings and
stage times, the writer thread, and the vector insert path."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SAMPLE, embed_into_new_store, query


@pytest.fixture(scope="module")
def two_precisions(tmp_path_factory, home):
    """The sample embedded in fp32, then in int8 (calibrated on the sample) into the same store."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    store = embed_into_new_store(tmp_path_factory, "precisions")
    r = CliRunner().invoke(cli, ["embed", str(SAMPLE), "--store", str(store), "--precision", "int8", "--json"])
    assert r.exit_code == 0, r.output
    return store, json.loads(r.stdout)


def _set(store, precision):
    from featstore.store.db import Store

    with Store.open(store) as st:
        return next(s for s in st.sets() if s.precision == precision)


def _vectors(store, s):
    rows = query(store, f"SELECT hash, vector FROM {s.table} ORDER BY hash")
    return [h for h, _ in rows], np.array([v for _, v in rows], np.float32)


def test_int8_is_its_own_set_close_to_fp32(two_precisions):
    store, summary = two_precisions
    assert summary["embedded"] == 100 and summary["precision"] == "int8"
    fp32, int8 = _set(store, "fp32"), _set(store, "int8")
    assert fp32.set_id != int8.set_id and fp32.table != int8.table
    assert int8.onnx_path.startswith(str(store / "models"))           # calibrated graph kept with the data
    h32, v32 = _vectors(store, fp32)
    h8, v8 = _vectors(store, int8)
    assert h32 == h8 and not np.array_equal(v32, v8)
    cos = (v32 * v8).sum(1) / np.linalg.norm(v32, axis=1) / np.linalg.norm(v8, axis=1)
    assert cos.mean() > 0.93 and cos.min() > 0.8
    info = json.loads((store / "models").glob("*.json").__next__().read_text())
    assert 0.9 < info["cosine_to_fp32_mean"] <= 1 and len(info["calibration_hashes"]) == 100


def test_int8_reembed_reuses_the_calibrated_graph(run, two_precisions, small_folder):
    store, _ = two_precisions
    before = _set(store, "int8")
    r = run("embed", small_folder, "--store", store, "--precision", "int8", "--json")
    out = json.loads(r.stdout)
    assert out["set_id"] == before.set_id            # a different folder: same graph, same set, no new calibration
    assert len(list((store / "models").glob("*.onnx"))) == 1


def test_fit_head_compares_int8_with_fp32(run, two_precisions):
    store, _ = two_precisions
    r = run("fit-head", "--task", "flowers", "--model", "efficientnet-lite0:int8", "--store", store, "--json")
    check = json.loads(r.stdout)["metrics"]["precision_check"]
    assert check["precision"] == "int8" and check["same_items"]
    assert abs(check["delta_points"] - 100 * (check["value"] - check["fp32_value"])) < 1e-9
    assert check["value"] > 0.6 and check["fp32_value"] > 0.6
    r = run("fit-head", "--task", "flowers", "--model", "efficientnet-lite0:int8", "--force", "--store", store)
    assert "precision int8 vs fp32, same head kind and held-out split" in r.output


def test_gc_keeps_the_fp32_set_beside_int8(run, two_precisions):
    store, _ = two_precisions
    out = json.loads(run("gc", "--dry-run", "--store", store, "--json").stdout)
    assert out["removed_sets"] == []


def test_precision_rules_are_one_line_errors(run, small_folder, tmp_path):
    r = run("embed", small_folder, "--precision", "fp16", "--device", "cpu", "--store", tmp_path / "s", ok=False)
    assert r.exit_code == 1 and "fp16 is for the GPU" in r.output and "Traceback" not in r.output


def test_fp16_graph_matches_fp32(home, tmp_path):
    """fp16 is a GPU precision; its conversion is checked here on the CPU, where ONNX Runtime can still run it."""
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.embed.decode import read_pixels
    from featstore.models.export import ensure_exported, parity_photos
    from featstore.models.precision import fp16_graph
    from featstore.models.preprocess import normalise

    spec = resolve(None)
    fp32 = ensure_exported(spec, log=lambda *_: None)
    fp16 = fp16_graph(fp32, log=lambda *_: None)
    assert fp16 != fp32 and fp16.stat().st_size < 0.6 * fp32.stat().st_size
    x = normalise(np.stack([read_pixels(str(p), spec.preprocess).pixels for p in parity_photos()]), spec.preprocess)
    a, b = Backbone(fp32, device="cpu").run(x), Backbone(fp16, device="cpu").run(x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert a.dtype == b.dtype == np.float32 and cos.min() > 0.999


def test_runs_are_recorded_with_settings_and_stage_times(run, two_precisions, small_folder, tmp_path):
    store, _ = two_precisions
    out = json.loads(run("stats", "--store", store, "--json").stdout)
    last = out["last_runs"][-1]          # the first run: fp32, 100 embedded
    assert last["source"] == str(SAMPLE.resolve()) or last["source"].endswith("flowers")
    cfg = last["config"]
    assert cfg["batch_size"] == 32 and cfg["device"] == "cpu" and "CPUExecutionProvider" in cfg["providers"]
    assert out["last_runs"][0]["config"]["device"] == "cpu"
    assert cfg["intra_op_threads"] >= 1 and cfg["spin_wait"] is False and cfg["decode_workers"] >= 1
    runs = query(store, "SELECT summary FROM runs ORDER BY run_id")
    first = json.loads(runs[0][0])
    assert first["embedded"] == 100 and first["stage_seconds"]["inference"] > 0
    assert first["stage_seconds"]["decode CPU (workers)"] > 0
    out = run("embed", small_folder, "--store", tmp_path / "s", "--no-progress").output
    assert "where the time went: inference" in out and "settings: batch 32" in out


def test_vector_insert_round_trip(tmp_path):
    """The batched insert (an Arrow table over the matrix) keeps every float and the row order, also from a
    float64 or non-contiguous matrix."""
    from pathlib import Path

    from featstore.embed.backbones import set_for
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported
    from featstore.store.db import Store

    spec = resolve(None)
    s = set_for(spec, Path(ensure_exported(spec, log=lambda *_: None)), "cpu")
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal((n, spec.dim)).astype(np.float32) for n in (5, 1, 32, 3, 4)]
    with Store.open(tmp_path / "s", write=True, create=True) as st:
        st.ensure_set(s)
        for i, v in enumerate(chunks):
            given = v.astype(np.float64) if i == 3 else np.asfortranarray(v) if i == 4 else v
            st.write_batch(s, [], [f"h{i}-{j}" for j in range(len(v))], given)
    rows = query(tmp_path / "s", f"SELECT vec_id, hash, vector FROM {s.table} ORDER BY vec_id")
    assert [r[0] for r in rows] == list(range(1, 46))
    assert [r[1] for r in rows] == [f"h{i}-{j}" for i, v in enumerate(chunks) for j in range(len(v))]
    assert np.array_equal(np.array([r[2] for r in rows], np.float32), np.concatenate(chunks))


def test_writer_error_stops_the_run_and_keeps_earlier_batches(home, small_folder, tmp_path, monkeypatch):
    """A failing write surfaces in the caller; batches written before it stay (one batch per transaction here, so
    the count is exact)."""
    from featstore.embed import write

    from featstore.models.catalog import resolve
    from featstore.embed.local import embed_files
    from featstore.embed.backbones import open_backbone
    from featstore.embed.source import scan_folder
    from featstore.store.db import Store

    spec = resolve(None)
    files = scan_folder(small_folder)[0]
    calls = {"n": 0}
    monkeypatch.setattr(write, "GROUP_ITEMS", 1)
    with Store.open(tmp_path / "s", write=True, create=True) as store:
        backbone, eset = open_backbone(spec, device="cpu", log=lambda *_: None)
        real = store.write_batch

        def flaky(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full (simulated)")
            return real(*a, **kw)

        monkeypatch.setattr(store, "write_batch", flaky)
        with pytest.raises(OSError, match="disk full"):
            embed_files(store, files, backbone, eset, spec.preprocess, batch_size=8, progress=False)
    assert query(tmp_path / "s", "SELECT count(*) FROM items")[0][0] == 8


def _writer_batches(dim, n_batches=10, size=8):
    """(rows, hashes, vectors) batches as the pipeline hands them over: each with one failed file (no vector),
    the last re-sending a path of the one before as failed (its last row must win)."""
    rng = np.random.default_rng(3)
    out = []
    for b in range(n_batches):
        hashes = [f"c{b:02d}{j}" for j in range(size - 1)]
        rows = [{"path": f"/p/{b:02d}/{j}.jpg", "hash": h, "size": 10 + j, "mtime": 1.0, "width": 32, "height": 24,
                 "status": "ok", "error": None} for j, h in enumerate(hashes)]
        rows.append({"path": f"/p/{b:02d}/broken.jpg", "hash": None, "size": 3, "mtime": 1.0, "width": None,
                     "height": None, "status": "failed", "error": "cannot decode"})
        if b == n_batches - 1:
            rows.append({"path": f"/p/{b - 1:02d}/0.jpg", "hash": None, "size": 1, "mtime": 2.0, "width": None,
                         "height": None, "status": "failed", "error": "truncated"})
        out.append((rows, hashes, rng.standard_normal((len(hashes), dim)).astype(np.float32)))
    return out


def _write_all(folder, batches, group_items):
    """The batches through a BatchWriter whose queue holds them all before its thread starts (a producer faster
    than the writer): the store's items and vectors, and how many transactions it took."""
    from featstore.embed.write import BatchWriter
    from featstore.store.db import Store
    from featstore.store.schema import EmbeddingSet

    s = EmbeddingSet("w", "w", 16, "vectors_w", "-", "-", {}, "fp32", "cpu")
    def threshold():
        return store.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]

    with Store.open(folder, write=True, create=True) as store:
        store.ensure_set(s)
        default = threshold()
        with store.bulk_writes():
            raised = threshold()
        writer = BatchWriter(store, s, depth=len(batches), group_items=group_items)
        for job in batches:
            writer.put(*job)
        with writer:
            pass
        settings = (default, raised, threshold())
    items = query(folder, "SELECT item_id, path, hash, size, mtime, width, height, status, error FROM items "
                          "ORDER BY item_id")
    vecs = query(folder, f"SELECT vec_id, hash, vector FROM {s.table} ORDER BY vec_id")
    return writer.transactions, settings, items, vecs


def test_writer_groups_queued_batches_and_stores_the_same(tmp_path):
    """Queued batches are written together up to the item limit (here 32 items: 4 batches of 8, 4 more, then the
    last 2 with the run's end); the store is the same as with one transaction per batch, and DuckDB's checkpoint
    threshold (raised for the run) is back to its default after it."""
    batches = _writer_batches(16)
    grouped = _write_all(tmp_path / "g", batches, group_items=32)
    single = _write_all(tmp_path / "s", batches, group_items=1)
    assert grouped[0] == 3 and single[0] == 10
    default, raised, after = grouped[1]
    assert raised != default and after == default and single[1] == grouped[1]
    assert grouped[2] == single[2] and len(grouped[2]) == 80
    assert [r[2] for r in grouped[2] if r[1] == "/p/08/0.jpg"] == [None]         # the last row for a path won
    assert [r[:2] for r in grouped[3]] == [r[:2] for r in single[3]] and len(grouped[3]) == 70
    assert np.array_equal(np.array([r[2] for r in grouped[3]]), np.concatenate([b[2] for b in batches]))


def test_writer_commits_a_lone_batch_without_waiting_for_more(tmp_path):
    """A batch with nothing queued behind it is committed at once, while the run goes on (no added latency)."""
    import time

    from featstore.embed.write import BatchWriter
    from featstore.store.db import Store
    from featstore.store.schema import EmbeddingSet

    s = EmbeddingSet("w", "w", 16, "vectors_w", "-", "-", {}, "fp32", "cpu")
    batches = _writer_batches(16, n_batches=2)
    with Store.open(tmp_path / "s", write=True, create=True) as store:
        store.ensure_set(s)
        with BatchWriter(store, s, group_items=10_000) as writer:
            writer.put(*batches[0])
            deadline = time.monotonic() + 60
            while writer.transactions == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            committed_while_open = writer.transactions
            writer.put(*batches[1])
    assert committed_while_open == 1 and writer.transactions == 2


def test_item_columns_reach_duckdb_as_given(tmp_path):
    """Item rows go to DuckDB as Arrow columns built from buffers: NULLs, non-ASCII text, the number types."""
    import duckdb

    from featstore.store.columns import arrow_table

    table = arrow_table({"path": ("VARCHAR", ["/a/é.jpg", "/b/日本.png", "", None]),
                         "size": ("BIGINT", [2**40, None, 0, -1]), "width": ("INTEGER", [None, 3, 2, 1]),
                         "mtime": ("DOUBLE", [1.5, 2.25, None, 1.7e9])})
    con = duckdb.connect()
    con.register("t", table)
    assert con.execute("SELECT path, size, width, mtime FROM t").fetchall() == [
        ("/a/é.jpg", 2**40, None, 1.5), ("/b/日本.png", None, 3, 2.25), ("", 0, 2, None), (None, -1, 1, 1.7e9)]


def test_a_fast_run_fills_small_row_groups_and_stores_the_same(tmp_path):
    """Batches queued faster than the writer takes them go in groups of GROUP_ITEMS into row groups of
    ROW_GROUP_ROWS rows (written to the file at the commit, uncompressed while the writer is behind); the vectors
    and items are those sent, and DuckDB's compression setting is its default again after the run."""
    from featstore.embed.write import GROUP_ITEMS, BatchWriter
    from featstore.store.db import ROW_GROUP_ROWS, Store
    from featstore.store.schema import EmbeddingSet

    s = EmbeddingSet("w", "w", 16, "vectors_w", "-", "-", {}, "fp32", "cpu")
    rng = np.random.default_rng(5)
    batches = []
    for b in range(12):
        hashes = [f"f{b:02d}{j:04d}" for j in range(512)]
        rows = [{"path": f"/f/{h}.jpg", "hash": h, "size": 1, "mtime": 1.0, "width": 8, "height": 8,
                 "status": "ok", "error": None} for h in hashes]
        batches.append((rows, hashes, rng.standard_normal((512, 16)).astype(np.float32)))
    with Store.open(tmp_path / "s", write=True, create=True) as store:
        store.ensure_set(s)
        default = store.con.execute("SELECT current_setting('force_compression')").fetchone()[0]
        writer = BatchWriter(store, s, depth=len(batches))
        for job in batches:
            writer.put(*job)
        with writer:
            pass
        after = store.con.execute("SELECT current_setting('force_compression')").fetchone()[0]
        row_groups = store.con.execute("SELECT max(row_group_id) + 1 FROM pragma_storage_info('vectors_w')").fetchone()
    assert writer.transactions == -(-len(batches) * 512 // GROUP_ITEMS) and after == default
    assert row_groups[0] == len(batches) * 512 // ROW_GROUP_ROWS
    vecs = query(tmp_path / "s", "SELECT vec_id, hash, vector FROM vectors_w ORDER BY vec_id")
    assert [r[0] for r in vecs] == list(range(1, 6145)) and [r[1] for r in vecs] == [h for b in batches for h in b[1]]
    assert np.array_equal(np.array([r[2] for r in vecs], np.float32), np.concatenate([b[2] for b in batches]))
    assert query(tmp_path / "s", "SELECT count(*) FROM items WHERE status = 'ok'")[0][0] == 6144


def test_int8_embedding_does_not_import_torch(home, small_folder, tmp_path):
    code = ("import sys; from featstore.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n")
    p = subprocess.run([sys.executable, "-c", code, "embed", str(small_folder), "--store", str(tmp_path / "s"),
                        "--precision", "int8", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("NO_TORCH")


def test_io_binding_path_gives_the_same_features(home):
    """The CUDA path's IO binding (a reused device input buffer, outputs bound to the host), exercised on the CPU
    device: same features as a plain run, across batch-size changes (short batches padded into the buffer)."""
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.embed.decode import read_pixels
    from featstore.models.export import ensure_exported, parity_photos
    from featstore.models.preprocess import normalise

    spec = resolve(None)
    path = ensure_exported(spec, log=lambda *_: None)
    x = normalise(np.stack([read_pixels(str(p), spec.preprocess).pixels for p in parity_photos()]), spec.preprocess)
    plain, bound = Backbone(path, device="cpu"), Backbone(path, device="cpu", io_binding=True)
    for batch in (x, x[:2], x[1:3], x, x[:1]):   # a full batch, shorter ones padded into its buffer, again
        assert np.allclose(bound.run(batch), plain.run(batch), atol=1e-5)
    assert bound.config()["io_binding"] is True


def test_decode_in_processes_gives_the_same_store(home, small_folder, tmp_path):
    """The GPU machine's decode stage (worker processes writing into a shared ring of pixel slots), run on the CPU:
    the same items, errors, copies and vectors as the thread pool, with a window small enough (batch 4: 16 slots)
    that every slot is reused many times, and bad files, a vanished file and copies in the stream."""
    import os
    import shutil

    import badfiles
    from featstore.models.catalog import resolve
    from featstore.embed.local import embed_files
    from featstore.embed.backbones import open_backbone
    from featstore.embed.source import scan_folder
    from featstore.store.db import Store

    root = badfiles.write_bad_folder(small_folder)
    (root / "copies").mkdir()
    for i, p in enumerate(sorted((root / "roses").iterdir())[:3]):
        shutil.copy(p, root / "copies" / f"copy{i}.jpg")
    files, _ = scan_folder(root)
    os.unlink(files[5].path)                       # vanishes between listing and reading
    spec = resolve(None)
    got = {}
    for decode in ("threads", "processes"):
        backbone, eset = open_backbone(spec, device="cpu")
        with Store.open(tmp_path / decode, write=True, create=True) as store:
            s = embed_files(store, files, backbone, eset, spec.preprocess, batch_size=4, workers=2, decode=decode,
                            progress=False)
            items = store.con.execute("SELECT path, hash, status, error, width, height FROM items ORDER BY path")
            vectors = store.con.execute(f"SELECT hash, vector FROM {eset.table} ORDER BY hash").fetchall()
            got[decode] = (items.fetchall(), [h for h, _ in vectors], np.array([v for _, v in vectors]), s)
    (items_t, hashes_t, vec_t, s_t), (items_p, hashes_p, vec_p, s_p) = got["threads"], got["processes"]
    assert s_p.config["decode"] == "processes" and s_t.config["decode"] == "threads"
    assert (s_p.embedded, s_p.copies, s_p.failed) == (s_t.embedded, s_t.copies, s_t.failed)
    assert s_p.copies >= 3 and s_p.failed == 6 and s_p.embedded > 40
    assert items_p == items_t and hashes_p == hashes_t
    assert np.allclose(vec_p, vec_t, atol=1e-6)
    assert s_p.stage_seconds["decode CPU (workers)"] > 0


def test_pixels_in_graph_equal_host_normalisation(home):
    """The GPU's fused input (uint8 NHWC in, cast/transpose/normalise inside the graph), run on the CPU: the same
    features as normalising on the host, for the catalogue's normalisation and for per-channel ImageNet ones."""
    from dataclasses import replace

    from featstore.embed.backbones import session_for
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.embed.decode import read_pixels
    from featstore.models.export import ensure_exported, parity_photos
    from featstore.models.precision import fp16_graph
    from featstore.models.preprocess import normalise

    spec = resolve(None)
    path = ensure_exported(spec, log=lambda *_: None)
    pixels = np.stack([read_pixels(str(p), spec.preprocess).pixels for p in parity_photos()])
    imagenet = replace(spec.preprocess, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    for pre in (spec.preprocess, imagenet):
        fused = session_for(path, "cpu", pre, pixels_in_graph=True)
        got = fused.run_pixels(pixels, pre)
        assert fused.input_dtype == np.uint8 and fused.config()["normalise"] == "in the graph"
        assert np.allclose(got, Backbone(path, device="cpu").run(normalise(pixels, pre)), atol=1e-5)
        assert np.allclose(fused.run_pixels(pixels[1:3], pre), got[1:3], atol=1e-5)
    plain = Backbone(path, device="cpu")
    plain.run_pixels(pixels, spec.preprocess)
    assert plain.config()["normalise"] == "on the host"          # the CPU default
    # the fp16 graph too (its converter leaves the input cast node out of topological order: fused all the same)
    half = fp16_graph(path, log=lambda *_: None)
    assert np.allclose(session_for(half, "cpu", spec.preprocess, pixels_in_graph=True).run_pixels(pixels, spec.preprocess),
                       Backbone(half, device="cpu").run_pixels(pixels, spec.preprocess), atol=1e-5)


def test_a_dead_decode_process_stops_the_run_with_one_line(home, small_folder):
    import multiprocessing
    import os
    import signal

    from featstore.embed import decode_pool
    from featstore.models.catalog import resolve
    from featstore.embed.local import Clock
    from featstore.errors import FeatstoreError
    from featstore.embed.source import scan_folder

    files, _ = scan_folder(small_folder)
    stream = decode_pool.decoded(files, resolve(None).preprocess, set(), 2, 8, Clock())
    assert next(stream).pixels is not None                 # the pool is up and decoding
    workers = multiprocessing.active_children()
    assert workers
    os.kill(workers[0].pid, signal.SIGKILL)
    with pytest.raises(FeatstoreError, match="decode worker process died"):
        list(stream)
