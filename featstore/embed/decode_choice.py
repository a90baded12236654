"""`--decode auto`: the decode stage a run uses, chosen by measuring the stages that can run here on the run's own
files, not by what is installed.

The candidates: on a CUDA backbone, decoding on the device (nvImageCodec, where it is installed and passes its
start check), in worker processes and in threads; on the CPU, processes and threads (the device stage would only
be nvImageCodec's CPU backend). Each decodes the same sample of the run's files alone (no backbone), and its rate
is taken after a warm-up (pool start-up and first calls excluded). The fastest is used, and remembered in the
featstore home for this machine, preprocessing and kind of file (size class), so later runs, small ones
included, use it without measuring. A run too small to be worth measuring, with nothing remembered, takes the
static rule: processes on a CUDA machine with more than two cores, threads otherwise. The run's record (and the
summary the CLI prints) says which stage ran and why.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time

from featstore.embed.source import SourceFile
from featstore.errors import FeatstoreError
from featstore.models.catalog import Preprocess

PROBE_FILES = 192            # files each candidate decodes when measured
MEASURE_FROM = 2000          # files a run needs before it is worth measuring (else the remembered or static choice)
WARM_UP = 0.25               # share of the probe that is not timed
CHOICES_FILE = "decode-choices.json"


class _Clock:
    def add(self, *_):
        pass


def choose(asked: str, backbone, pre: Preprocess, todo: list[SourceFile], batch_size: int,
           workers: int) -> tuple[str, str | None, dict]:
    """(decode stage, why it was chosen or None, measured rates in images/s or {})."""
    from featstore.embed import decode_device

    if asked in ("threads", "processes"):
        return asked, None, {}
    if asked == "device":
        cannot = decode_device.unavailable(pre) or decode_device.self_test(pre, backbone.device)
        if cannot:
            raise FeatstoreError(f"--decode device: {cannot}")
        return "device", None, {}
    candidates, excluded = candidate_stages(backbone.device, pre, workers)
    if len(candidates) == 1:
        return candidates[0], excluded, {}
    key = _key(backbone.device, pre, workers, todo)
    remembered = _remembered().get(key)
    if remembered and remembered["mode"] in candidates:
        rates = remembered["rates"]
        return remembered["mode"], f"fastest measured on this machine ({_rates_text(rates)})", rates
    if len(todo) < MEASURE_FROM:
        mode = "processes" if backbone.device == "cuda" and workers > 2 else "threads"
        return mode, f"{len(todo)} files: too few to measure the decode stages; {excluded or 'static rule'}", {}
    rates = {mode: measure(mode, todo[:PROBE_FILES], pre, backbone.device, workers, batch_size)
             for mode in candidates}
    mode = max(rates, key=rates.get)
    _remember(key, mode, rates)
    return mode, f"fastest measured on {min(len(todo), PROBE_FILES)} of this run's files ({_rates_text(rates)})", rates


def candidate_stages(device: str, pre: Preprocess, workers: int) -> tuple[list[str], str | None]:
    """The stages `auto` chooses among here, and why the device stage is not one of them (or None)."""
    from featstore.embed import decode_device

    stages = ["threads"] + (["processes"] if workers > 1 else [])
    if device != "cuda":
        return stages, None
    cannot = decode_device.unavailable(pre) or decode_device.self_test(pre, device)
    if cannot:
        return stages, f"not on the device: {cannot}"
    return ["device"] + stages, None


def measure(mode: str, files: list[SourceFile], pre: Preprocess, device: str, workers: int,
            batch_size: int) -> float:
    """Images/s of one decode stage alone on `files`, timed after the warm-up share."""
    from featstore.embed import decode, decode_device, decode_pool

    window = 2 * batch_size
    decoder = None
    if mode == "device":
        decoder = decode_device.open_decoder(pre, device, window, batch_size)
        stream = decode_device.device_decoded(files, pre, set(), workers, window, _Clock(), decoder)
    else:
        stream = (decode_pool.decoded if mode == "processes" else decode.decoded)(files, pre, set(), workers,
                                                                                 window, _Clock())
    skip, start, n = int(len(files) * WARM_UP), None, 0
    for i, prep in enumerate(stream):
        if decoder is not None and prep.slot is not None:
            decoder.ring.give([prep.slot])
        if i == skip:
            start = time.perf_counter()
        elif i > skip:
            n += 1
    seconds = time.perf_counter() - start if start is not None else 0.0
    return round(n / seconds, 1) if seconds > 0 and n else 0.0


def _rates_text(rates: dict) -> str:
    return ", ".join(f"{mode} {rate:,.0f}/s" for mode, rate in sorted(rates.items(), key=lambda kv: -kv[1]))


def _key(device: str, pre: Preprocess, workers: int, todo: list[SourceFile]) -> str:
    """What the choice depends on: the device, the cores used, the preprocessing, the libraries, and the size
    class of the files (a photo of 12 MP decodes at another pace than one of 0.1 MP)."""
    from featstore import runtimes
    onnxruntime = runtimes.onnxruntime()

    sizes = []
    for f in todo[:64]:
        try:
            sizes.append(os.path.getsize(f.path))
        except (OSError, TypeError, ValueError):
            continue
    size_class = round(math.log2(statistics.median(sizes))) if sizes else 0
    try:
        from importlib.metadata import version

        codec = version("nvidia-nvimgcodec-cu13")
    except Exception:               # noqa: BLE001  (not installed, or another CUDA build's package name)
        codec = "-"
    return (f"{device}|{workers}|{pre.size}/{pre.resize}/{pre.interpolation}/{pre.crop_fraction}/"
            f"{getattr(pre, 'resize_to', None)}|ort {onnxruntime.__version__}|nvimgcodec {codec}|2^{size_class} B")


def _path():
    from featstore.home import home_dir

    return home_dir() / CHOICES_FILE


def _remembered() -> dict:
    try:
        return json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, mode: str, rates: dict) -> None:
    """Keep the choice in the featstore home (a lost or unwritable file only means measuring again)."""
    try:
        known = _remembered()
        known[key] = {"mode": mode, "rates": rates, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        path = _path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
