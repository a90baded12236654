"""More bad input, each with a defined outcome: special files are never opened, reads are capped and a consistent
snapshot, formats Pillow cannot read say what they are, extreme shapes and multi-frame files decode, odd names
print on one line, a full disk leaves a usable store, odd text sources fail row by row."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import badfiles
import badinputs
from conftest import query, sample_images
from featstore.models.images import decode_image
from featstore.embed.local import read_pixels
from featstore.models.catalog import resolve

PRE = resolve(None).preprocess
FEATSTORE = str(Path(sys.executable).parent / "featstore")


def items(store: Path) -> dict:
    return {r[0]: {"status": r[1], "error": r[2]} for r in query(store, "SELECT path, status, error FROM items")}


def embed_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    """The real CLI in a process of its own, so that a read that blocks (a FIFO) fails the test instead of hanging."""
    return subprocess.run([FEATSTORE, "embed", *map(str, args), "--no-progress"], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def zoo(tmp_path):
    root = tmp_path / "zoo"
    for p in sample_images(1):            # one real photo per class
        (root / p.parent.name).mkdir(parents=True)
        (root / p.parent.name / p.name).write_bytes(p.read_bytes())
    return badinputs.write_zoo(root)


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_awkward_files_recorded_and_run_goes_on(home, zoo, tmp_path, decode):
    store = tmp_path / "store"
    r = embed_cli(zoo, "--store", store, "--decode", decode, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = items(store)
    by_name = {Path(p).name: v for p, v in rows.items()}
    for name, (_, status, reason) in badinputs.IMAGES.items():
        assert by_name[name]["status"] == status, (name, by_name[name])
        if reason:
            assert reason in by_name[name]["error"], (name, by_name[name])
    for name, reason in badinputs.SPECIAL.items():
        assert by_name[name] == {"status": "failed", "error": f"{reason}, not read"}, name
    assert by_name["inside.jpg"]["status"] == "ok"                 # a folder named x.jpg is walked as a folder
    assert str(zoo / "odd" / "new\nline.jpg") in rows               # the newline is stored as it is
    n_failed = sum(v["status"] == "failed" for v in rows.values())
    assert out["failed"] == n_failed == 6 and len(rows) == 5 + len(badinputs.IMAGES) + 3 + 1
    again = embed_cli(zoo, "--store", store, "--decode", decode, "--retry-failed")
    assert again.returncode == 0, again.stderr
    printed = [line for line in again.stdout.splitlines() if line.startswith("failed: ")]
    assert len(printed) == 6                                        # one line each, the newline escaped
    assert any(line.startswith(f"failed: {zoo}/odd/bad\\nname.jpg: not an image") for line in printed), printed
    assert items(store) == rows                                     # nothing stored was lost or changed


def test_first_frame_and_extreme_shapes():
    for name in ("pages.tif", "anim.webp"):
        a = np.asarray(decode_image(badinputs.IMAGES[name][0]()))
        assert a[10, 10, 1] > 150 and a[10, 10, 0] < 50, name       # green first page/frame, not the red second
    for name in ("wide.png", "tall.png"):
        prep = read_pixels_of(badinputs.IMAGES[name][0]())
        assert prep.error is None and prep.pixels.shape == (224, 224, 3)
        assert tuple(prep.pixels[112, 112]) == (0, 0, 200), name   # the centre of the long side, not an end
    photo = np.asarray(decode_image(badfiles.real_jpeg()), float)
    icc = np.asarray(decode_image(badinputs.jpeg_with_big_icc()), float)
    assert icc.shape == photo.shape and np.abs(icc - photo).mean() < 8


def read_pixels_of(data: bytes, tmp=Path("/tmp")):
    path = tmp / f"featstore-test-{os.getpid()}-{threading.get_ident()}.bin"
    path.write_bytes(data)
    try:
        return read_pixels(str(path), PRE)
    finally:
        path.unlink()


def test_read_is_capped(tmp_path, monkeypatch):
    big = tmp_path / "big.jpg"
    big.write_bytes(badinputs.jpeg_with_big_icc())                  # 10 MB, a valid image
    assert read_pixels(str(big), PRE).error is None
    monkeypatch.setenv("FEATSTORE_MAX_FILE_MB", "4")
    prep = read_pixels(str(big), PRE)
    assert prep.pixels is None and "over the 4 MB limit" in prep.error and "FEATSTORE_MAX_FILE_MB" in prep.error
    assert read_pixels(str(sample_images(1)[0]), PRE).error is None  # small files still read
    by_url = read_pixels(big.as_uri(), PRE)                          # a URL (fsspec) is capped the same way
    assert by_url.pixels is None and "over the 4 MB limit" in by_url.error
    assert read_pixels(sample_images(1)[0].resolve().as_uri(), PRE).error is None


def test_special_file_is_not_read_even_when_named_directly(tmp_path):
    """read_pixels itself (predict, search --like, a file swapped in after the listing) refuses a device or a FIFO
    without reading or blocking: O_NONBLOCK open, fstat checked."""
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jpg")
    for name, kind in (("zero.jpg", "character device"), ("fifo.jpg", "FIFO")):
        result = []
        t = threading.Thread(target=lambda: result.append(read_pixels(str(tmp_path / name), PRE)), daemon=True)
        t.start()
        t.join(20)
        assert result, f"reading {name} blocked or ran on"
        assert result[0].error == f"not a regular file ({kind}), not read"


def test_file_growing_while_read_is_refused_not_mixed(tmp_path):
    path = tmp_path / "growing.jpg"
    path.write_bytes(badfiles.real_jpeg() + bytes(30 << 20))
    stop = threading.Event()

    def grow():
        with open(path, "ab") as f:
            while not stop.wait(0.001) and f.tell() < 400 << 20:     # ~64 MB/s at most, under the read cap
                f.write(bytes(1 << 16))
                f.flush()

    t = threading.Thread(target=grow, daemon=True)
    t.start()
    try:
        results = [read_pixels(str(path), PRE) for _ in range(10)]
    finally:
        stop.set()
        t.join()
    changed = [r for r in results if r.error and "changed while it was read" in r.error]
    assert changed, [r.error for r in results]
    assert all(r.error is None or r in changed for r in results)     # nothing else went wrong


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs (needs root; `mount -o remount,size=...` gives space back)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_during_embed_keeps_a_usable_store(run, small_disk):
    """The disk fills first in a batch commit (DuckDB), then, with a little more room, in the index write (FAISS):
    each is one line, what was committed stays, and a rerun with space back completes."""
    store = small_disk / "store"
    folder = badfiles.sample_images(1)[0].parent.parent              # the bundled 100 photos
    r = run("embed", folder, "--store", store, "--no-progress", ok=False)
    assert r.exit_code == 1 and r.output.startswith("Error: out of disk space (") and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and "No space left on device" in r.output
    stats = json.loads(run("stats", "--store", store, "--json").stdout)        # the DuckDB file opens
    kept = stats["items"]["ok"]
    assert 0 < kept < 100 and query(store, "SELECT count(*) FROM items WHERE status = 'ok'")[0][0] == kept

    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)
    r = run("embed", folder, "--store", store, "--no-progress", ok=False)
    assert r.exit_code == 1 and "out of disk space" in r.output and "Traceback" not in r.output
    assert not [p.name for p in (store / "index").iterdir() if ".tmp" in p.name]   # no half-written index left

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    out = json.loads(run("embed", folder, "--store", store, "--no-progress", "--json").stdout)
    assert out["embedded"] + out["already"] == 100 and out["already"] >= kept and out["failed"] == 0
    assert "in sync" in run("verify", "--store", store).output


TEXT_MODEL = "all-minilm-l6-v2"


def test_text_table_bad_cells_fail_alone(run, tmp_path):
    """A CSV with a NUL byte in a cell, a 10 MB cell and a row that is not UTF-8: only that row fails (csv's
    128 KB field limit used to fail the whole table); the long text is cut at the token limit, quickly."""
    import csv
    import time

    from featstore.models.tokenize import TextTokenizer

    big = "the river rose over the fields and the town waited. " * 200_000          # 10.4 MB
    table = tmp_path / "notes.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([["a NUL \x00 in the middle of a sentence", "a"], ["a plain sentence about football", "b"],
                     [big, "a"]])
    with open(table, "ab") as f:
        f.write(b"caf\xe9 is not UTF-8 here,b\n")
    store = tmp_path / "store"
    out = json.loads(run("embed", table, "--store", store, "--label-column", "label", "--json").stdout)
    assert out["embedded"] == 3 and out["failed"] == 1 and out["truncated"] == 1
    assert [(k.rsplit("#", 1)[1], e) for k, e in out["failures"]] == [("4", "undecodable bytes (not UTF-8)")]
    stored = dict(query(store, "SELECT text, truncated FROM texts"))
    assert stored["a NUL \x00 in the middle of a sentence"] is False and stored[big] is True
    tok = TextTokenizer(resolve(TEXT_MODEL))
    t0 = time.perf_counter()
    enc = tok.encode([big])
    assert time.perf_counter() - t0 < 2 and enc.truncated[0]
    assert list(enc.feeds["input_ids"][0]) == tok.tok.encode(big[:5000]).ids    # the same tokens as a prefix


def test_text_sources_empty_and_broken_lines(run, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    r = run("embed", empty, "--store", tmp_path / "s1")                           # exit code 0
    assert "0 texts listed" in r.output and "no texts found" in r.output
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(b'{"text": "the first line is fine"}\n{"text": "broken\n{"text": "the third is fine"}\n')
    out = json.loads(run("embed", lines, "--store", tmp_path / "s2", "--json").stdout)
    assert out["embedded"] == 2 and out["failed"] == 1
    key, error = out["failures"][0]
    assert key.endswith("lines.jsonl#2") and error.startswith("line 2: invalid JSON")
