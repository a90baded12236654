"""Device decode (nvImageCodec + the crop/resize graph), run here on nvImageCodec's CPU backend and ONNX Runtime's
CPU provider: the same stage, batching, fallbacks and failure records as on a GPU, with host buffers. The CUDA
run of it is in test_gpu.py."""
import json
from pathlib import Path

import numpy as np
import pytest

import badfiles
from conftest import SAMPLE, query, sample_images

pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec not installed (the dev and gpu extras bring it)")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("spec", [dict(size=224), dict(size=260), dict(size=224, resize="shorter-side-then-crop",
                                                                         resize_to=256),
                                  dict(size=224, resize="exact", interpolation="bilinear"),
                                  dict(size=180, resize="exact"), dict(size=240, interpolation="nearest")])
def test_the_resize_graph_reproduces_pillows_crop_and_resize(spec):
    """20 photos of different sizes in one call of the graph, padded to one shape, against
    preprocess.crop_resize's pixels, photo by photo: off by under half a level on average (Pillow rounds between
    its passes, in an order that depends on its version; the graph rounds once), the same sample positions (a
    shifted box is off by several levels), upscaling included. Pixels already at the model's size come through
    the identity box unchanged."""
    import onnxruntime as ort

    from featstore.models.catalog import Preprocess
    from featstore.models.images import decode_image
    from featstore.models.preprocess import crop_resize
    from featstore.models.resize_graph import geometry, resize_graph

    p = Preprocess(**spec)
    session = ort.InferenceSession(resize_graph(p).SerializeToString(), providers=["CPUExecutionProvider"])
    imgs = [decode_image(path.read_bytes()) for path in sample_images(4)]
    ready = crop_resize(imgs[0], p)
    arrays = [np.asarray(img) for img in imgs] + [ready]
    height, width = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    staged = np.full((len(arrays), height, width, 3), 77, np.uint8)          # padding never sampled
    for k, a in enumerate(arrays):
        staged[k, :a.shape[0], :a.shape[1]] = a
    geos = [geometry(img.size[0], img.size[1], p) for img in imgs]
    geos.append(geometry(p.size, p.size, Preprocess(size=p.size, resize="exact")))
    boxes, extents = (np.stack(g) for g in zip(*geos))
    out = session.run(None, {"images": staged, "boxes": boxes, "extents": extents})[0]
    diffs = [np.abs(out[k].astype(int) - crop_resize(img, p)).mean() for k, img in enumerate(imgs)]
    assert max(diffs) < (0.5 if p.interpolation != "nearest" else 0.01), max(diffs)
    assert np.array_equal(out[-1], ready)
    shifted = boxes.copy()
    shifted[:, [0, 2]] += 1.0
    moved = session.run(None, {"images": staged, "boxes": shifted, "extents": extents})[0]
    assert min(np.abs(moved[k].astype(int) - crop_resize(img, p)).mean() for k, img in enumerate(imgs)) > 1.0


def test_one_resize_call_per_chunk(home, tmp_path, monkeypatch):
    """Device decode crops and resizes a chunk of files in one ONNX Runtime call (not one per image), CPU-decoded
    files of the chunk included; a chunk whose padded staging would pass STAGING_PIXELS is split, and the slots
    still follow the files."""
    from featstore.embed import decode_device, device_batch
    from featstore.embed.local import Clock
    from featstore.embed.source import scan_folder
    from featstore.models.catalog import resolve

    folder = tmp_path / "photos"
    photos = sample_images(20)
    for p in photos:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / p.parent.name / p.name).write_bytes(p.read_bytes())
    (folder / "roses" / "as.png").write_bytes(badfiles.png(badfiles.Image.open(photos[0])))    # CPU-decoded
    files = scan_folder(folder)[0]
    pre = resolve(None).preprocess

    def run(window: int) -> tuple[int, list]:
        decoder = decode_device.open_decoder(pre, "cpu", window, 8)
        got = []
        for prep in decode_device.device_decoded(files, pre, set(), 2, window, Clock(), decoder):
            got.append((prep.file.path, device_batch.to_host(decoder.ring.value)[prep.slot].copy()))
            decoder.ring.give([prep.slot])
        return decoder.ring.resize_calls, got

    calls, got = run(64)
    chunks = -(-len(files) // decode_device.CHUNK)
    assert len(files) == 101 and calls == chunks == 2
    monkeypatch.setattr(device_batch, "STAGING_PIXELS", 4 * 320 * 320)
    split_calls, split = run(64)
    assert split_calls > chunks
    assert [p for p, _ in split] == [p for p, _ in got]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, split))


def embed(root: Path, folder: Path, decode: str) -> dict:
    import featstore

    fs = featstore.open(root)
    summary = fs.embed(folder, decode=decode, progress=False)
    return summary


def stored(root: Path) -> dict:
    """path -> (status, error, width, height, vector or None), read from the store's DuckDB file."""
    from featstore.store.db import Store

    with Store.open(root) as st:
        table = st.pick_set("efficientnet-lite0").table
    rows = query(root, f"SELECT i.path, i.status, i.error, i.width, i.height, v.vector FROM items i "
                       f"LEFT JOIN {table} v USING (hash) ORDER BY i.path")
    return {r[0]: (r[1], r[2], r[3], r[4], None if r[5] is None else np.asarray(r[5], np.float32)) for r in rows}


def test_device_decode_stores_what_cpu_decode_stores(home, tmp_path, small_folder):
    """The awkward-inputs folder embedded with --decode threads and with --decode device: the same items with
    the same status, error text, width and height, features within cosine 0.999 on the same photos; the JPEGs
    went through nvImageCodec and the rest (PNG, GIF, CMYK, broken files) through the CPU decoder."""
    root = badfiles.write_bad_folder(small_folder)
    embed(tmp_path / "cpu", root, "threads")
    embed(tmp_path / "device", root, "device")
    cpu, dev = stored(tmp_path / "cpu"), stored(tmp_path / "device")
    assert cpu.keys() == dev.keys()
    for path in cpu:
        assert cpu[path][:4] == dev[path][:4], path
    ok = [p for p in cpu if cpu[p][0] == "ok"]
    cos = cosines(np.stack([cpu[p][4] for p in ok]), np.stack([dev[p][4] for p in ok]))
    assert cos.min() >= 0.999, (cos.min(), ok[int(cos.argmin())])
    config = query(tmp_path / "device", "SELECT config FROM runs ORDER BY run_id DESC LIMIT 1")[0][0]
    config = json.loads(config)
    assert config["decode"] == "device"
    jpegs = sum(1 for p in ok if p.lower().endswith(".jpg") and "cmyk" not in p)     # copies in one run included
    assert config["decoded_on_device"] == jpegs and config["decoded_on_cpu"] >= 5, config


def test_device_decode_on_the_sample_and_its_rerun(run, tmp_path):
    """The CLI with --decode device on the bundled sample: every photo embedded, features within cosine 0.999
    of the CPU decoder's, a rerun does nothing, and the run's record says which decoder took each photo."""
    out = json.loads(run("embed", SAMPLE, "--store", tmp_path / "dev", "--decode", "device", "--json").stdout)
    assert out["embedded"] == 100 and out["failed"] == 0
    again = json.loads(run("embed", SAMPLE, "--store", tmp_path / "dev", "--decode", "device", "--json").stdout)
    assert again["embedded"] == 0 and again["already"] == 100
    run("embed", SAMPLE, "--store", tmp_path / "cpu", "--decode", "threads", "--json")
    cpu, dev = stored(tmp_path / "cpu"), stored(tmp_path / "dev")
    cos = cosines(np.stack([cpu[p][4] for p in cpu]), np.stack([dev[p][4] for p in cpu]))
    assert cos.min() >= 0.999, cos.min()
    config = json.loads(query(tmp_path / "dev", "SELECT config FROM runs ORDER BY run_id LIMIT 1")[0][0])
    assert config["decode"] == "device" and config["decoded_on_device"] == 100 and config["decoded_on_cpu"] == 0


def test_device_decode_refused_clearly_where_it_cannot_run(home, tmp_path):
    """--decode device in a Python without nvImageCodec (hidden from this one run): one line naming what is
    missing, exit 1, no traceback, no store created."""
    import os
    import subprocess
    import sys

    hide = ("import sys; sys.modules['nvidia.nvimgcodec'] = None; from featstore.cli.main import cli; "
            "cli(prog_name='featstore')")
    res = subprocess.run([sys.executable, "-c", hide, "embed", str(SAMPLE), "--store", str(tmp_path / "s"),
                          "--decode", "device"], capture_output=True, text=True, env=dict(os.environ),
                         timeout=300)
    assert res.returncode == 1, res.stderr
    assert "nvImageCodec is not installed" in res.stderr + res.stdout and "Traceback" not in res.stderr
    assert not (tmp_path / "s" / "store.duckdb").exists()


def test_slots_go_back_to_the_ring_and_a_stopped_run_does_not_hang(home, tmp_path):
    """More files than the ring has slots, most of them copies of content batched earlier in the run (their slots
    go back unbatched), in small batches: the run ends with every file stored (a leaked slot would leave the
    decode thread waiting for ever). And a stream abandoned midway, its slots never given back, closes at once."""
    import shutil
    import subprocess
    import sys
    import threading

    from featstore.embed import decode_device
    from featstore.embed.local import Clock
    from featstore.embed.source import scan_folder
    from featstore.models.catalog import resolve

    folder = tmp_path / "many"
    photos = sample_images(20)
    for copy in range(3):
        for p in photos:
            (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, folder / p.parent.name / f"{copy}-{p.name}")
    assert decode_device.ring_slots(2 * 4, 4) < 300
    res = subprocess.run([sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store",
                          str(tmp_path / "s"), "--decode", "device", "--batch-size", "4", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["embedded"] == 100 and out["copies"] == 200 and out["failed"] == 0

    pre = resolve(None).preprocess
    decoder = decode_device.open_decoder(pre, "cpu", 64, 1)
    stream = decode_device.device_decoded(scan_folder(folder)[0], pre, set(), 2, 64, Clock(), decoder)
    taken = [next(stream) for _ in range(10)]              # their slots are never given back
    assert all(p.slot is not None for p in taken)
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "the decode thread kept waiting for a slot"


def test_a_cut_jpeg_goes_to_the_cpu_decoder_which_records_it_failed():
    """The GPU's hardware decoder returns an image for a JPEG cut in half where Pillow records the file as
    failed: such a file is never given to nvImageCodec, so both decode modes record it alike. Whole JPEGs (also
    with an EXIF thumbnail, whose own end marker comes before the main scan, or with data after the end) are."""
    import io

    from PIL import Image

    from featstore.embed.decode_device import whole_jpeg

    photo = badfiles.real_jpeg()
    assert whole_jpeg(photo) and whole_jpeg(photo + b"\x00" * 16) and whole_jpeg(photo + b"trailer after EOI")
    assert not whole_jpeg(badfiles.truncated_jpeg()) and not whole_jpeg(photo[:-2])
    thumb = io.BytesIO()
    Image.open(io.BytesIO(photo)).resize((64, 64)).save(thumb, format="JPEG")
    exif = Image.Exif()
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buf, format="JPEG", exif=exif.tobytes())
    with_exif = buf.getvalue()
    thumbed = with_exif[:2] + b"\xff\xe1" + (len(thumb.getvalue()) + 2 + 6).to_bytes(2, "big") + b"Exif\x00\x00" \
        + thumb.getvalue() + with_exif[2:]
    assert whole_jpeg(thumbed) and not whole_jpeg(thumbed[: len(thumbed) * 2 // 3])
    assert not whole_jpeg(badfiles.truncated_jpeg()[:200])


def test_auto_measures_the_decode_stages_and_remembers_the_fastest(home, tmp_path, monkeypatch):
    """--decode auto on a run big enough to measure: each stage that can run here decodes the same sample of the
    run's files alone, the fastest runs the embed, the rates and the reason are in the run's record, and the
    choice is remembered in the featstore home: a later run (a small one included) uses it without measuring. A
    run too small to measure, with nothing remembered, takes the static rule and says so."""
    import featstore
    from featstore.embed import decode_choice

    monkeypatch.setattr(decode_choice, "MEASURE_FROM", 50)
    monkeypatch.setattr(decode_choice, "PROBE_FILES", 40)
    remembered = home / decode_choice.CHOICES_FILE
    remembered.unlink(missing_ok=True)
    measured = []
    real = decode_choice.measure
    monkeypatch.setattr(decode_choice, "measure", lambda mode, *a: measured.append(mode) or real(mode, *a))

    try:
        small = tmp_path / "small"
        for p in sample_images(2):
            (small / p.parent.name).mkdir(parents=True, exist_ok=True)
            (small / p.parent.name / p.name).write_bytes(p.read_bytes())
        featstore.open(tmp_path / "s0").embed(small, workers=2, progress=False)
        config = json.loads(query(tmp_path / "s0", "SELECT config FROM runs")[0][0])
        assert config["decode"] == "threads" and "too few to measure" in config["decode_note"] and not measured

        featstore.open(tmp_path / "s1").embed(SAMPLE, workers=2, progress=False)
        config = json.loads(query(tmp_path / "s1", "SELECT config FROM runs")[0][0])
        rates = config["decode_rates"]
        assert sorted(measured) == sorted(rates) == ["processes", "threads"]        # no CUDA here: no device stage
        assert all(r > 0 for r in rates.values()) and config["decode"] == max(rates, key=rates.get)
        assert "fastest measured" in config["decode_note"]
        assert json.loads(remembered.read_text())

        featstore.open(tmp_path / "s2").embed(SAMPLE, workers=2, progress=False)
        again = json.loads(query(tmp_path / "s2", "SELECT config FROM runs")[0][0])
        assert len(measured) == 2 and again["decode"] == config["decode"]
        assert "fastest measured on this machine" in again["decode_note"] and again["decode_rates"] == rates
    finally:
        remembered.unlink(missing_ok=True)        # later tests in this session decide afresh
