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
    """Per photo, the graph's pixels against preprocess.crop_resize's: off by under half a level on average
    (Pillow rounds between its passes; the graph does not), the same sample positions (a shifted box is off by
    several levels), and no region for samples past the border (those go to the CPU decoder)."""
    import onnxruntime as ort

    from featstore.models.catalog import Preprocess
    from featstore.models.images import decode_image
    from featstore.models.preprocess import crop_resize
    from featstore.models.resize_graph import geometry, resize_graph

    p = Preprocess(**spec)
    session = ort.InferenceSession(resize_graph(p).SerializeToString(), providers=["CPUExecutionProvider"])
    diffs, none = [], 0
    for path in sample_images(20):
        img = decode_image(path.read_bytes())
        geo = geometry(*img.size, p)
        if geo is None:
            none += 1
            assert p.resize == "exact" and min(img.size) < p.size       # upscaling with no margin only
            continue
        out = session.run(None, {"image": np.asarray(img), **geo})[0]
        diffs.append(np.abs(out.astype(int) - crop_resize(img, p)).mean())
    assert none < 50 and max(diffs) < (0.5 if p.interpolation != "nearest" else 0.01), max(diffs)


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
