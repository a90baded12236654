"""The Ray engine (issue 8) on a real subset with a local Ray: same vectors and item records as the local engine,
resumable by shard, ingestion at most once; and the image manifest source it shards."""
import json
import shutil

import numpy as np
import pytest

from conftest import query, sample_images

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """40 real photos in class folders, plus one corrupt file and one copy (so failures and copies are covered)."""
    root = tmp_path_factory.mktemp("raysub") / "flowers"
    imgs = sample_images(8)
    for p in imgs:
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, root / p.parent.name / p.name)
    (root / "roses" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy2(imgs[0], root / "tulips" / "copy-of-first.jpg")
    return root


def contents(store):
    t = query(store, "SELECT table_name FROM embedding_sets")[0][0]
    vectors = {h: np.asarray(v, np.float32) for h, v in query(store, f"SELECT hash, vector FROM {t}")}
    items = sorted(query(store, "SELECT path, hash, size, mtime, width, height, status, error FROM items"))
    labels = sorted(query(store, "SELECT task, path, label FROM labels"))
    return vectors, items, labels


def assert_same(a, b):
    va, ia, la = contents(a)
    vb, ib, lb = contents(b)
    assert va.keys() == vb.keys() and len(va) == 40
    assert max(np.abs(va[h] - vb[h]).max() for h in va) <= 1e-5
    assert ia == ib and la == lb


@pytest.fixture(scope="module")
def ray_store(tmp_path_factory, home, local_ray, subset):
    from click.testing import CliRunner

    from featstore.cli.main import cli

    store = tmp_path_factory.mktemp("ray") / "store"
    r = CliRunner().invoke(cli, ["embed", str(subset), "--store", str(store), "--engine", "ray", "--shard-size",
                                 "10", "--json"])
    assert r.exit_code == 0, r.output
    return store, json.loads(r.stdout)


def test_ray_engine_matches_local_engine(run, ray_store, subset, tmp_path):
    store, out = ray_store
    assert out["embedded"] == 40 and out["failed"] == 1 and out["copies"] == 1
    assert out["config"]["engine"] == "ray" and out["config"]["shards"]["computed"] == 5
    run("embed", subset, "--store", tmp_path / "local", "--no-progress")
    assert_same(store, tmp_path / "local")
    failed = query(store, "SELECT path, error FROM items WHERE status = 'failed'")
    assert failed[0][0].endswith("broken.jpg") and "cannot decode" in failed[0][1]


def test_rerun_redoes_only_unfinished_shards(run, ray_store, subset, tmp_path):
    """As after a killed driver: 2 of the 5 shards had finished (staged), the rest not; the rerun computes only
    the 3 others and the store equals an uninterrupted run's. Ingesting a shard again changes nothing."""
    from featstore.embed.ingest import ingest
    from featstore.embed.shards import make_shards
    from featstore.store.db import Store

    store, _ = ray_store
    staged = sorted((store / "staging").glob("*/*.parquet"))
    assert len(staged) == 5
    resumed = tmp_path / "resumed"
    set_dir = resumed / "staging" / staged[0].parent.name
    set_dir.mkdir(parents=True)
    for f in staged[:2]:
        shutil.copy2(f, set_dir / f.name)
    r = run("embed", subset, "--store", resumed, "--engine", "ray", "--shard-size", "10")
    assert "staged by an earlier run 2" in r.output and "computed now 3" in r.output
    assert_same(store, resumed)
    with Store.open(resumed, write=True) as st:
        s = st.sets()[0]
        shard = make_shards(_listing(subset), s.set_id, 10)[0]
        assert ingest(st, s, shard, set_dir / shard.name) is None
    assert_same(store, resumed)
    r = run("embed", subset, "--store", resumed, "--engine", "ray", "--shard-size", "10")
    assert "computed now 0" in r.output and "ingested before 5" in r.output


def _listing(folder):
    from featstore.embed.source import scan_folder

    return scan_folder(folder)[0]


def test_damaged_staged_file_is_recomputed(ray_store, tmp_path):
    from featstore.embed.shards import make_shards, valid
    from featstore.store.db import Store

    store, _ = ray_store
    with Store.open(store) as st:
        s = st.sets()[0]
    staged = sorted((store / "staging" / s.set_id).glob("*.parquet"))
    shards = {sh.name: sh for sh in make_shards(_listing(_subset_root(store)), s.set_id, 10)}
    good = staged[0]
    assert valid(good, shards[good.name])
    bad = tmp_path / good.name
    bad.write_bytes(good.read_bytes()[:100])
    assert not valid(bad, shards[good.name])
    other = shards[staged[1].name]
    assert not valid(good, other)                       # a file of another shard does not count


def _subset_root(store):
    path = query(store, "SELECT min(path) FROM items")[0][0]
    from pathlib import Path

    return Path(path).parent.parent


def test_manifest_source_gives_the_folder_records(run, home, subset, tmp_path):
    rows = ["path,label"] + [f"{f.path},{f.label}" for f in _listing(subset)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    run("embed", tmp_path / "m.csv", "--store", tmp_path / "a", "--task", "flowers", "--no-progress")
    run("embed", subset, "--store", tmp_path / "b", "--no-progress")
    assert_same(tmp_path / "a", tmp_path / "b")


def test_urls_for_sources_and_staging(run, local_ray, ray_store, subset, tmp_path):
    """A manifest of file:// URLs, staged at a file:// URL: the fsspec paths of the Ray engine, same results."""
    store, _ = ray_store
    rows = ["path,label"] + [f"file://{f.path},{f.label}" for f in _listing(subset)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    staging = f"file://{tmp_path}/remote-staging"
    out = json.loads(run("embed", tmp_path / "m.csv", "--task", "flowers", "--store", tmp_path / "u", "--engine",
                         "ray", "--shard-size", "10", "--staging", staging, "--json").stdout)
    assert out["embedded"] == 40 and out["failed"] == 1
    assert len(list((tmp_path / "remote-staging").glob("*/*.parquet"))) == 5
    va, _, _ = contents(store)
    vb, items, _ = contents(tmp_path / "u")
    assert va.keys() == vb.keys() and max(np.abs(va[h] - vb[h]).max() for h in va) <= 1e-5
    assert all(p.startswith("file://") for p, *_ in items)


def test_ray_rerun_marks_vanished_files_removed(run, local_ray, subset, tmp_path):
    """A file deleted from the folder is marked removed by an `--engine ray` re-embed, as by the local engine."""
    folder = tmp_path / "flowers"
    shutil.copytree(subset, folder)
    store = tmp_path / "store"
    run("embed", folder, "--store", store, "--no-progress")
    gone = sorted((folder / "daisy").glob("*.jpg"))[0]
    gone.unlink()
    out = json.loads(run("embed", folder, "--store", store, "--engine", "ray", "--shard-size", "10",
                         "--json").stdout)
    assert out["removed"] == 1 and out["removed_paths"] == [str(gone)] and out["embedded"] == 0
    assert query(store, f"SELECT status FROM items WHERE path = '{gone}'") == [("removed",)]
