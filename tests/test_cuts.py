"""Cut activations with the real EfficientNet-Lite0 on the real flowers sample: `embed --cut` stores fp16
activations per view beside the pooled vectors (which stay exactly those of a plain embed), the pretrained layers
above the cut reproduce the pooled vector from them, views are seeded augmentations, runs resume, stats shows the
size, and a store without them says which command makes them."""
import json

import numpy as np
import pytest

from conftest import SAMPLE, cli_runner, embed_into_new_store

LITE0 = "efficientnet-lite0"
SHAPES = {"conv-head": (320, 7, 7), "last-block": (192, 7, 7)}
FP32_BOUND = 1e-4        # top(bottom(x)) vs the backbone's pooled vector, activations never rounded
FP16_BOUND = 2e-3        # ... after fp16 storage (measured on the 900 flowers: 3.7e-4 at conv-head, 7.3e-4 at
                         # last-block, |pooled| <= 6; on the 100-image sample 2e-4 and 5e-4)


@pytest.fixture(scope="module")
def cli(home):
    return cli_runner()


@pytest.fixture(scope="module")
def stores(home, cli, tmp_path_factory):
    """A plain store, and one embedded with --cut conv-head then --cut last-block --views 3 (JSON summaries)."""
    plain = embed_into_new_store(tmp_path_factory, "plain")
    cut = tmp_path_factory.mktemp("cut") / "store"
    first = json.loads(cli("embed", SAMPLE, "--store", cut, "--cut", "conv-head", "--json").stdout)
    second = json.loads(cli("embed", SAMPLE, "--store", cut, "--cut", "last-block", "--views", 3, "--json").stdout)
    return plain, cut, first, second


def _open(path):
    from featstore.store.db import Store

    return Store.open(path)


def _pooled(path) -> dict:
    with _open(path) as st:
        (s,) = st.sets()
        rows = st.con.execute(f"SELECT hash, vector FROM {s.table}").fetchall()
    return {h: np.asarray(v, np.float32) for h, v in rows}


def _top(cut):
    from featstore.models.cuts import top_module

    return top_module(LITE0, cut)


def _run_top(top, x, mask=None) -> np.ndarray:
    import torch

    with torch.no_grad():
        return top(torch.from_numpy(np.asarray(x, np.float32)), mask).numpy()


def test_cut_points_and_option_errors(cli, tmp_path):
    from featstore.errors import FeatstoreError
    from featstore.models.cuts import check_cut, cut_points

    assert [c.name for c in cut_points(LITE0)] == ["conv-head", "last-block"]
    assert [c.name for c in cut_points("all-minilm-l6-v2")] == ["last-block", "last-2-blocks"]
    with pytest.raises(FeatstoreError, match="conv-head, last-block"):
        check_cut(LITE0, "middle")
    out = cli("models", "cuts", LITE0).output
    assert "conv-head" in out and "before the last MBConv stage" in out
    store = tmp_path / "never"
    for args, says in [(["--cut", "middle"], "unknown cut 'middle' for efficientnet-lite0; its cut points: "
                                             "conv-head, last-block"),
                       (["--views", "3"], "give --cut too"),
                       (["--cut", "last-block", "--views", "0"], "give 1 to 64 views")]:
        r = cli("embed", SAMPLE, "--store", store, *args, ok=False)
        assert r.exit_code != 0 and says in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1
        assert not store.exists()                 # refused before any work


def test_shapes_fp16_and_stats_size(stores, cli):
    from featstore.store.activations import activation_sets, read_activations

    _, cut, first, second = stores
    assert first["cut"]["embedded"] == 100 and second["cut"]["embedded"] == 100
    assert second["embedded"] == 0 and second["already"] == 100      # the pooled pass had nothing new
    with _open(cut) as st:
        sets = {a.cut: a for a in activation_sets(st)}
        assert {c: (a.shape, a.views) for c, a in sets.items()} == {"conv-head": (SHAPES["conv-head"], 1),
                                                                    "last-block": (SHAPES["last-block"], 3)}
        hashes = sorted(_pooled(cut))[:7]
        for c, a in sets.items():
            got = read_activations(st, a, hashes)
            assert got["x"].dtype == np.float16 and got["x"].shape == (7, a.views) + SHAPES[c]
            assert got["mask"] is None and got["hashes"] == hashes
            assert np.isfinite(got["x"]).all() and got["x"].std() > 0
            assert read_activations(st, a, hashes, views=False)["x"].shape == (7, 1) + SHAPES[c]
    stats = json.loads(cli("stats", "--store", cut, "--json").stdout)
    sizes = {a["cut"]: a for a in stats["activation_sets"]}
    assert sizes["conv-head"]["bytes_per_item"] == 320 * 49 * 2
    assert sizes["last-block"]["bytes_per_item"] == 3 * 192 * 49 * 2
    assert sizes["last-block"]["bytes"] == 100 * 3 * 192 * 49 * 2 and sizes["last-block"]["items"] == 100
    table = cli("stats", "--store", cut).output
    assert "last-block" in table and "192 x 7 x 7" in table and "56.4 KB" in table


def test_pooled_set_unchanged_and_no_activation_set_among_vector_sets(stores, cli):
    plain, cut, _, _ = stores
    a, b = _pooled(plain), _pooled(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[h], b[h]) for h in a)
    with _open(cut) as st:
        assert len(st.sets()) == 1 and st.pick_set(None).model == LITE0
    stats = json.loads(cli("stats", "--store", cut, "--json").stdout)
    assert [s["model"] for s in stats["embedding_sets"]] == [LITE0]
    fit = json.loads(cli("fit-head", "--task", "flowers", "--store", cut, "--json").stdout)
    assert fit["set_id"] == stats["embedding_sets"][0]["set_id"]
    assert json.loads(cli("verify", "--store", cut, "--json").stdout)["ok"]


def test_top_module_reproduces_pooled_vector(stores):
    """fp32 activations from the bottom graph on the plain preprocessing -> top == pooled within 1e-4; the
    stored fp16 view 0 -> within FP16_BOUND."""
    from featstore.embed.decode import read_pixels
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph, cut_shape
    from featstore.models.preprocess import normalise
    from featstore.models.session import run_once
    from featstore.store.activations import find_activation_set, read_activations

    _, cut, _, _ = stores
    pooled = _pooled(cut)
    pre = resolve(LITE0).preprocess
    files = [str(p) for p in sorted(SAMPLE.rglob("*.jpg"))[::10]]
    preps = [read_pixels(f, pre) for f in files]
    x = normalise(np.stack([p.pixels for p in preps]), pre)
    expected = np.stack([pooled[p.hash] for p in preps])
    hashes = sorted(pooled)
    for name in SHAPES:
        top = _top(name)
        act = run_once(bottom_graph(LITE0, name), x).reshape((len(x),) + cut_shape(LITE0, name))
        assert np.abs(_run_top(top, act) - expected).max() <= FP32_BOUND
        with _open(cut) as st:
            stored = read_activations(st, find_activation_set(st, LITE0, name), hashes, views=False)["x"][:, 0]
        diff = np.abs(_run_top(top, stored) - np.stack([pooled[h] for h in hashes])).max()
        assert diff <= FP16_BOUND, f"{name}: {diff}"


def test_views_are_seeded_augmentations(stores, tmp_path, cli):
    from featstore.embed.cut_views import make_views
    from featstore.embed.decode import read_hashed
    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_graph
    from featstore.models.images import decode_image
    from featstore.models.preprocess import draft_target, normalise
    from featstore.models.session import run_once
    from featstore.store.activations import find_activation_set, read_activations, view_params

    _, cut, _, _ = stores
    with _open(cut) as st:
        a = find_activation_set(st, LITE0, "last-block")
        hashes = sorted(_pooled(cut))
        x = read_activations(st, a, hashes)["x"].astype(np.float32)
        params = view_params(st, a, hashes[:3])
    assert a.augment["seed"] == 0 and a.augment["scale"] == [0.25, 1.0]
    for v in (1, 2):                                      # every augmented view differs from the plain one
        assert (np.abs(x[:, v] - x[:, 0]).reshape(len(x), -1).max(axis=1) > 0.1).all()
    assert (np.abs(x[:, 1] - x[:, 2]).reshape(len(x), -1).max(axis=1) > 0.1).all()
    for h in hashes[:3]:
        assert params[h][0] is None and {"box", "flip", "image"} <= set(params[h][1])
    # reproducible: the same seed remakes the same views from the file alone
    pre = resolve(LITE0).preprocess
    path = next(str(p) for p in SAMPLE.rglob("*.jpg") if read_hashed(str(p)).hash == hashes[0])
    got = read_hashed(path)
    pixels, again = make_views(decode_image(got.data, draft_to=draft_target(pre)), pre, 3, 0, hashes[0])
    assert again == params[hashes[0]]
    remade = run_once(bottom_graph(LITE0, "last-block"), normalise(pixels, pre)).reshape(3, 192, 7, 7)
    assert np.abs(remade.astype(np.float16).astype(np.float32) - x[0]).max() <= 1e-2
    # another seed: another set, other crops
    other = json.loads(cli("embed", SAMPLE, "--store", cut, "--cut", "last-block", "--views", 3, "--view-seed", 7,
                           "--json").stdout)["cut"]
    assert other["act_id"] != a.act_id and other["embedded"] == 100
    with _open(cut) as st:
        y = read_activations(st, find_activation_set(st, other["act_id"], None), hashes[:5])["x"].astype(np.float32)
    assert np.array_equal(y[:, 0], x[:5, 0]) and np.abs(y[:, 1] - x[:5, 1]).max() > 0.1


def test_rerun_resumes_and_new_views_make_new_set(stores, cli):
    _, cut, first, _ = stores
    again = json.loads(cli("embed", SAMPLE, "--store", cut, "--cut", "conv-head", "--json").stdout)["cut"]
    assert again["act_id"] == first["cut"]["act_id"] and again["embedded"] == 0 and again["already"] == 100
    text = cli("embed", SAMPLE, "--store", cut, "--cut", "conv-head", "--no-progress").output
    assert "activations at conv-head (320 x 7 x 7, fp16, 1 view" in text
    assert "computed now 0, already stored 100" in text


def test_interrupted_run_fills_in_the_rest(home, cli, tmp_path):
    """A set holding some contents (as after a killed run): the re-run computes only the others."""
    from featstore.store.activations import activation_sets
    from featstore.store.db import Store

    store = tmp_path / "store"
    first = json.loads(cli("embed", SAMPLE, "--store", store, "--cut", "last-block", "--views", 2, "--json").stdout)
    with Store.open(store, write=True) as st:
        (a,) = activation_sets(st)
        st.con.execute(f"DELETE FROM {a.table} WHERE hash IN (SELECT DISTINCT hash FROM {a.table} ORDER BY hash "
                       "LIMIT 30)")
        st.con.execute(f"DELETE FROM {a.table} WHERE hash IN (SELECT hash FROM {a.table} WHERE view = 1 "
                       "ORDER BY hash LIMIT 5) AND view = 1")        # a content with only some views: redone
    broken = cli("verify", "--store", store, "--json", ok=False)
    assert broken.exit_code == 1 and json.loads(broken.stdout)["activation_sets"][0]["incomplete"] == 5
    out = json.loads(cli("embed", SAMPLE, "--store", store, "--cut", "last-block", "--views", 2, "--json").stdout)
    assert out["cut"]["act_id"] == first["cut"]["act_id"]
    assert out["cut"]["embedded"] == 35 and out["cut"]["already"] == 65
    report = json.loads(cli("verify", "--store", store, "--json").stdout)
    assert report["ok"] and report["activation_sets"][0] | {"act_id": None} == {
        "act_id": None, "model": "efficientnet-lite0", "cut": "last-block", "items": 100, "incomplete": 0,
        "bad_size": 0, "non_finite": 0}


def test_store_without_activations_names_the_command(stores):
    from featstore.errors import FeatstoreError
    from featstore.store.activations import find_activation_set, read_activations

    plain, cut, _, _ = stores
    with _open(plain) as st, pytest.raises(FeatstoreError) as err:
        find_activation_set(st, LITE0, "last-block")
    assert str(err.value) == ("no activations at cut 'last-block' for efficientnet-lite0 in this store: run "
                              "`featstore embed SOURCE --cut last-block` first (`featstore models cuts MODEL` lists "
                              "the cut points)")
    with _open(cut) as st:
        a = find_activation_set(st, None, "conv-head")
        with pytest.raises(FeatstoreError, match="2 of 3 contents have no activations"):
            read_activations(st, a, [sorted(_pooled(cut))[0], "0" * 64, "1" * 64])


def test_gc_drops_activations_of_removed_items(home, cli, tmp_path):
    import shutil

    folder = tmp_path / "few"
    for p in sorted(SAMPLE.rglob("*.jpg"))[:6]:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.parent.name / p.name)
    store = tmp_path / "store"
    act = json.loads(cli("embed", folder, "--store", store, "--cut", "conv-head", "--json").stdout)["cut"]["act_id"]
    for p in sorted(folder.rglob("*.jpg"))[:2]:
        p.unlink()
    cli("embed", folder, "--store", store, "--no-progress")                # marks the 2 vanished files removed
    out = json.loads(cli("gc", "--store", store, "--json").stdout)
    assert out["removed_activations"] == {act: 2} and out["removed_activation_sets"] == []
    stats = json.loads(cli("stats", "--store", store, "--json").stdout)
    assert stats["activation_sets"][0]["items"] == 4


def test_copies_share_one_activation(home, cli, tmp_path):
    """The same content at two paths is stored once, and counted once when already stored."""
    import shutil

    folder = tmp_path / "dup"
    src = sorted(SAMPLE.rglob("*.jpg"))[:3]
    for p in src:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.parent.name / p.name)
    shutil.copy2(src[0], folder / src[0].parent.name / "copy.jpg")
    store = tmp_path / "store"
    first = json.loads(cli("embed", folder, "--store", store, "--cut", "conv-head", "--json").stdout)["cut"]
    again = json.loads(cli("embed", folder, "--store", store, "--cut", "conv-head", "--json").stdout)["cut"]
    assert (first["embedded"], first["already"]) == (3, 0) and (again["embedded"], again["already"]) == (0, 3)
