"""The GPU path, on a machine with a GPU and featstore[gpu] only; skipped everywhere else (CI included).

Run there with `pytest tests/test_gpu.py`. What it proves: the CUDA provider is really the one the session runs on
(not a silent CPU fallback); its features agree with the CPU's; IO binding with short batches padded into the
reused device buffer gives the same features as plain runs; the fp16 graph stays close to fp32; `embed --device
cuda` and `--device auto` go through the CLI to a store whose run record names the CUDA provider, and the rest of
the workflow (fit-head, search) works on it; with faiss-gpu-cuvs, the GPU index finds what the CPU index finds; with
nvImageCodec, decode on the device stores what CPU decode stores.
"""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLE

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="no CUDA provider in this onnxruntime (install featstore[gpu] on a GPU machine)")


@pytest.fixture(scope="module")
def fp32_graph(request):
    """The default backbone's ONNX file: from FEATSTORE_HOME when it is already exported there, else the test home."""
    from featstore.models.catalog import resolve
    from featstore.models.export import cached_path, ensure_exported, is_exported

    spec = resolve(None)
    if not (os.environ.get("FEATSTORE_HOME") and is_exported(spec)):
        request.getfixturevalue("home")
    return ensure_exported(spec, log=lambda *_: None) if not is_exported(spec) else cached_path(spec)


@pytest.fixture(scope="module")
def photos():
    from featstore.models.catalog import resolve
    from featstore.embed.decode import read_pixels
    from featstore.models.preprocess import normalise
    from featstore.embed.source import scan_folder

    spec = resolve(None)
    files = scan_folder(SAMPLE)[0][:20]
    return normalise(np.stack([read_pixels(f.path, spec.preprocess).pixels for f in files]), spec.preprocess)


def _cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_cuda_session_runs_on_cuda_and_agrees_with_the_cpu(fp32_graph, photos):
    from featstore.embed.run import Backbone

    gpu, cpu = Backbone(fp32_graph, device="cuda"), Backbone(fp32_graph, device="cpu")
    got, want = gpu.run(photos), cpu.run(photos)
    assert gpu.config()["providers"][0] == "CUDAExecutionProvider"
    assert gpu.config()["io_binding"] is True
    assert Backbone(fp32_graph, device="auto").device == "cuda"
    # TF32 convolutions on Ampere and later round the inputs to 10-bit mantissas: close, not bit-equal
    assert _cosines(got, want).min() > 0.999, _cosines(got, want)


def test_io_binding_pads_short_batches_into_one_buffer(fp32_graph, photos):
    from featstore.embed.run import Backbone

    bound, plain = Backbone(fp32_graph, device="cuda"), Backbone(fp32_graph, device="cuda", io_binding=False)
    for batch in (photos, photos[:3], photos[5:6], photos[2:19], photos):
        assert _cosines(bound.run(batch), plain.run(batch)).min() > 0.9999
    assert bound._device_input.shape()[0] == len(photos)      # one buffer, the largest batch, reused


def test_pixels_normalised_inside_the_graph_on_cuda(fp32_graph):
    from featstore.embed.backbones import session_for
    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve
    from featstore.embed.decode import read_pixels
    from featstore.embed.source import scan_folder

    pre = resolve(None).preprocess
    pixels = np.stack([read_pixels(f.path, pre).pixels for f in scan_folder(SAMPLE)[0][:20]])
    fused = session_for(fp32_graph, "cuda", pre)
    got = fused.run_pixels(pixels, pre)
    assert fused.config()["normalise"] == "in the graph" and fused.input_dtype == np.uint8
    host = Backbone(fp32_graph, device="cuda")
    assert _cosines(got, host.run_pixels(pixels, pre)).min() > 0.9999
    assert host.config()["normalise"] == "on the host"


def test_fp16_graph_on_cuda_stays_close_to_fp32(fp32_graph, photos):
    from featstore.embed.run import Backbone
    from featstore.models.precision import fp16_graph

    fp16 = Backbone(fp16_graph(fp32_graph, log=lambda *_: None), device="cuda")
    cos = _cosines(fp16.run(photos), Backbone(fp32_graph, device="cuda").run(photos))
    assert cos.min() > 0.995 and cos.mean() > 0.999, cos


def test_embed_on_cuda_through_the_cli(fp32_graph, tmp_path):
    from featstore.cli.main import cli
    from featstore.store.db import Store

    store = tmp_path / "store"
    for args in (["--device", "cuda", "--decode", "processes"], ["--device", "cuda", "--precision", "fp16"]):
        r = CliRunner().invoke(cli, ["embed", str(SAMPLE), "--store", str(store), "--json", *args])
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["device"] == "cuda" and out["embedded"] == 100 and out["failed"] == 0
    with Store.open(store) as st:
        runs = st.runs()
        assert {s.precision for s in st.sets()} == {"fp32", "fp16"}
    assert all(r["config"]["providers"][0] == "CUDAExecutionProvider" for r in runs[:2])
    assert [r["config"]["decode"] for r in runs[:2]] == ["threads", "processes"]        # newest first
    assert all(r["config"]["normalise"] == "in the graph" for r in runs[:2])
    again = CliRunner().invoke(cli, ["embed", str(SAMPLE), "--store", str(store), "--device", "auto", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["embedded"] == 0     # auto chose cuda: same set
    r = CliRunner().invoke(cli, ["fit-head", "--task", "flowers", "--model", "efficientnet-lite0:fp16",
                                 "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    for precision in ("fp32", "fp16"):
        r = CliRunner().invoke(cli, ["search", "--like", str(sorted(SAMPLE.rglob("*.jpg"))[0]), "-k", "5",
                                     "--model", f"efficientnet-lite0:{precision}", "--store", str(store), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["results"][0]["score"] > 0.999     # the query photo itself, embedded on the GPU


def test_faiss_gpu_finds_what_the_cpu_finds():
    """featstore's GPU index paths: IVF trained with its k-means on the GPU (index_kinds.train), flat and IVF
    indexes cloned to the GPU for search (index_kinds.on_gpu, as search.py does); same neighbours as on the CPU."""
    from featstore.store.index_kinds import Vectors, build_tuned, gpu_count, on_gpu, set_param

    if gpu_count() == 0:
        pytest.skip("faiss has no GPU here (faiss-cpu installed, not the gpu extra's faiss-gpu-cuvs)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 128))[rng.integers(0, 50, 20000)] + 0.6 * rng.normal(size=(20000, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(1, 20001, dtype=np.int64)
    for kind in ("flat", "ivf"):
        index, record = build_tuned(kind, Vectors(ids, x), 128, 0.95)
        assert record["recall_at_10"] >= 0.95
        set_param(index, kind, record["params"])
        _, want = index.search(x[:200], 10)
        gpu = on_gpu(index, kind)
        assert gpu is not index
        _, got = gpu.search(x[:200], 10)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist())]) > 0.99, kind


def test_device_decode_on_cuda_matches_cpu_decode(fp32_graph, tmp_path, small_folder):
    """--decode device on CUDA: nvImageCodec decodes the JPEGs on the GPU, the crop/resize graph writes them into
    the device batch the backbone reads (no host copy of pixels). Against --decode threads on the same GPU: the
    same items, statuses, errors and sizes (awkward files fall back to the CPU decoder), features within cosine
    0.999 on the same photos; the run record says nvImageCodec took the JPEGs."""
    pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec not installed (featstore[gpu])")
    import badfiles
    from featstore.cli.main import cli
    from featstore.store.db import Store

    root = badfiles.write_bad_folder(small_folder)
    stored = {}
    for decode in ("threads", "device"):
        store = tmp_path / decode
        r = CliRunner().invoke(cli, ["embed", str(root), "--store", str(store), "--device", "cuda", "--decode",
                                     decode, "--json"])
        assert r.exit_code == 0, r.output
        with Store.open(store) as st:
            table = st.pick_set("efficientnet-lite0").table
            rows = st.con.execute(f"SELECT i.path, i.status, i.error, i.width, i.height, v.vector FROM items i "
                                  f"LEFT JOIN {table} v USING (hash) ORDER BY i.path").fetchall()
            config = st.runs()[0]["config"]
        stored[decode] = ({r[0]: r[1:5] for r in rows}, {r[0]: np.asarray(r[5], np.float32) for r in rows if r[5]},
                          config)
    (cpu_rows, cpu_vecs, _), (dev_rows, dev_vecs, config) = stored["threads"], stored["device"]
    assert cpu_rows == dev_rows
    paths = sorted(cpu_vecs)
    cos = _cosines(np.stack([cpu_vecs[p] for p in paths]), np.stack([dev_vecs[p] for p in paths]))
    assert cos.min() >= 0.999, (cos.min(), paths[int(cos.argmin())])
    assert config["decode"] == "device" and config["providers"][0] == "CUDAExecutionProvider"
    assert config["decoded_on_device"] >= 40 and config["decoded_on_cpu"] >= 5, config
