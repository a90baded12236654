"""Small inputs and edge cases on real stores (real ONNX Runtime, DuckDB, FAISS, photos from tests/data/flowers):
no backbone copies left in the temp folder by the Ray engine, `select -n` beyond the eligible items, a memory
budget too small for any index, symlinks to folders inside the tree, and the array-API estimator checks."""
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import query, sample_images


# ---- 1. the Ray engine leaves no featstore-*.onnx in the temp folder ------------------------------------------
@pytest.fixture
def private_tmp_ray(monkeypatch):
    """A local Ray whose processes see TMPDIR as a private folder (short: Ray puts its sockets there too)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    tmp = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield tmp
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_ray_embed_leaves_no_onnx_copies_in_temp(run, private_tmp_ray, tmp_path):
    folder = tmp_path / "flowers"
    for p in sample_images(3)[:10]:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.parent.name / p.name)
    out = json.loads(run("embed", folder, "--store", tmp_path / "store", "--engine", "ray", "--shard-size", 5,
                         "--workers", 2, "--json").stdout)
    assert out["embedded"] == 10 and out["config"]["shards"]["computed"] == 2
    assert list(private_tmp_ray.rglob("featstore-*.onnx")) == []


def test_ray_actor_graph_file_from_shipped_bytes_is_removed(home, private_tmp_ray):
    """A worker that cannot see the set's ONNX file gets the shipped bytes in a temporary file, removed after."""
    import hashlib

    import ray

    from featstore.embed.ray import graph_file
    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported

    data = ensure_exported(resolve(None), log=lambda *_: None).read_bytes()
    with graph_file(ray.put(data), hashlib.sha256(data).hexdigest(), "/nonexistent/model.onnx") as path:
        assert path.read_bytes() == data
    assert not path.exists()


# ---- 2. select -n beyond the eligible items ---------------------------------------------------------------------
def test_select_more_than_eligible_returns_them_with_a_note(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    paths = [p for (p,) in query(store, "SELECT path FROM items ORDER BY path")]
    labelled, free = paths[:35], paths[35:]
    labels = tmp_path / "few.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(labelled)))
    run("label", "--task", "few", "--csv", labels, "--store", store)
    r = run("select", "--task", "few", "-n", 10, "--store", store)
    picked = [row["path"] for row in csv.DictReader(r.stdout.splitlines())]
    assert sorted(picked) == sorted(free)
    assert "only 5 items" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    out = json.loads(run("select", "--task", "few", "-n", 10, "--strategy", "uncertain", "--store", store,
                         "--json").stdout)
    assert sorted(it["path"] for it in out["items"]) == sorted(free)
    assert out["n"] == 10 and out["pool"] == 5 and "only 5 items" in out["note"]
    full = json.loads(run("select", "--task", "few", "-n", 5, "--store", store, "--json").stdout)
    assert full["note"] is None and len(full["items"]) == 5


# ---- 3. index build --memory ------------------------------------------------------------------------------------
def test_index_memory_budget_too_small_or_unparsable_is_one_line(run, small_folder, tmp_path):
    store = tmp_path / "store"
    run("embed", small_folder, "--store", store, "--no-progress")
    r = run("index", "build", "--memory", "1KB", "--store", store, ok=False)
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert "--memory 1KB" in r.output and "needs about" in r.output
    needed = r.output.split("needs about ")[1].split()[0].rstrip(".;,)")
    out = json.loads(run("index", "build", "--memory", needed, "--store", store, "--json").stdout)
    assert out["count"] == 40
    r = run("index", "build", "--kind", "flat", "--memory", "1KB", "--store", store, ok=False)
    assert r.exit_code != 0 and "--kind flat index" in r.output and "needs about" in r.output
    assert "--memory 1024B is too small" in run("index", "build", "--memory", "1KiB", "--store", store, ok=False).output
    for bad in ("lots", "inf", "-4GB", "12XB"):
        r = run("index", "build", "--memory", bad, "--store", store, ok=False)
        assert r.exit_code != 0 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
        assert f"not a size: {bad!r}" in r.output, r.output
    assert json.loads(run("index", "build", "--store", store, "--json").stdout)["kind"] == "flat"


def test_auto_rule_with_a_budget():
    from featstore.store.index_kinds import choose, index_bytes

    assert choose(40, 1280, 10**9) == "flat"
    assert choose(40_000, 1280, index_bytes("ivf-sq8", 40_000, 1280)) == "ivf-sq8"     # flat does not fit, SQ8 does
    assert choose(10, 1280, 1) == "flat"                        # fewer vectors than IVF lists: flat or nothing


# ---- 4. symlinks to folders inside the tree ---------------------------------------------------------------------
def test_link_to_sibling_folder_is_followed_and_only_real_loops_are_loops(run, small_folder, tmp_path):
    (small_folder / "roses" / "more-daisies").symlink_to("../daisy", target_is_directory=True)
    (small_folder / "tulips" / "up").symlink_to("..", target_is_directory=True)              # a real loop
    (small_folder / "sunflowers" / "self").symlink_to(".", target_is_directory=True)         # also one
    store = tmp_path / "store"
    out = json.loads(run("embed", small_folder, "--store", store, "--json").stdout)
    loops = [w for w in out["warnings"] if "symlink loop" in w]
    assert sorted(Path(w.split(":")[0]).name for w in loops) == ["self", "up"]
    assert out["embedded"] == 40 and out["copies"] == 8
    via_link = dict(query(store, "SELECT path, hash FROM items WHERE path LIKE '%/more-daisies/%'"))
    daisy = {Path(p).name: h for p, h in query(store, "SELECT path, hash FROM items WHERE path LIKE '%/daisy/%'"
                                                        " AND path NOT LIKE '%/more-daisies/%'")}
    assert len(via_link) == 8 and {Path(p).name: h for p, h in via_link.items()} == daisy


# ---- 5. the array-API estimator checks run ----------------------------------------------------------------------
def test_array_api_estimator_check_runs_rather_than_skips():
    """SCIPY_ARRAY_API=1 is in the environment before scipy's first import (tests/conftest.py), so scikit-learn's
    array-API check of the heads runs (it skipped, at a pytest-internal line, without it)."""
    import unittest

    import scipy._lib._array_api as scipy_array_api
    from sklearn.utils.estimator_checks import check_array_api_input

    from featstore.heads import RidgeHead

    assert os.environ.get("SCIPY_ARRAY_API") == "1" and scipy_array_api.SCIPY_ARRAY_API
    try:
        check_array_api_input("RidgeHead", RidgeHead(), array_namespace="numpy", expect_only_array_outputs=False)
    except unittest.SkipTest as exc:
        pytest.fail(f"the array-API check skipped: {exc}")
