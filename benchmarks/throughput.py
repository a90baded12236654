"""Benchmark: embedding throughput, end to end, against the tutorial loop and against the inference ceiling.

    python benchmarks/throughput.py [FOLDER] [--big 100] [--many 0] [--memory-images 20000] [--threads N]
                                    [--device cpu|cuda] [--out DIR] [--writer-only] [--decode-ratios-only]

In one run, same machine, same weights (EfficientNet-Lite0), same thread count, on two inputs: FOLDER (default
../shared/datasets/flowers, small JPEGs) and a large-photo set generated from it (--big images, each upscaled to
about 12 MP and re-encoded, written once to benchmarks/.cache/, not committed):
1. tutorial: PyTorch eager model, PIL loop (open, RGB, resize, centre crop, normalise), batch 32;
2. featstore CPU fp32 end to end (files -> vectors in a fresh store, index included);
3. featstore CPU int8 end to end (the int8 graph calibrated on the same input first; that one-off is reported);
4. the ceiling: ONNX Runtime on pre-decoded tensors (pure inference, same session settings, fp32 and int8), and
   the backbone's FLOPs per image against this machine's measured matrix-multiply FLOP/s.
Also decode alone (one thread): naive full decode + resize vs featstore's (DCT-domain downscaling); fit-head
accuracy on the fp32 and int8 sets of FOLDER; the peak resident memory of `featstore embed` on
--memory-images generated images (unique bytes each), sampled as it runs, to show it stays flat; and the writer
alone (writer.py: 20,000 random 1280-d vectors with their item rows through featstore's writer thread into a
fresh store, against the previous write path in the same run). --writer-only runs just that row (under a minute)
and prints `writer alone: N vectors/s (today's path: M vectors/s)` as its last line. On FOLDER, CPU and CUDA
alike: decode alone in worker processes against threads (`--decode processes` vs `threads`, no inference, runs
alternated, medians): 1 process vs 1 thread and --threads processes vs --threads threads, and the pool's one-off
start in a fresh process; --decode-ratios-only runs just that (about a minute) and prints it as JSON.
Targets: fp32 >= 4x tutorial on FOLDER; >= 85% of the ceiling on FOLDER and >= 60% on the 12 MP set;
int8 >= 1.6x fp32 with accuracy within 1 point; peak RSS <= 1.5 GB on 20,000 images; decode alone, 1 worker
process >= 95% of 1 thread and --threads processes >= 85% of as many threads. Writes throughput.json/.md.

--device cuda (a GPU machine with featstore[gpu]): the same rows on the GPU, plus decode alone (featstore's decode
stage with no inference behind it: on the cores, and on the device with nvImageCodec) and featstore CUDA fp32 end
to end with --decode device, so the limiting stage shows; the tutorial's model on the GPU too,
fp16 in place of int8 (ONNX Runtime's CUDA provider), batch 128, and the matrix-multiply rate measured on the GPU
(torch, fp32). Both the tutorial's model and featstore's session are warmed up with one batch before their clocks
(first CUDA calls and cuDNN's algorithm search are one-off costs). --many N adds a third input: N distinct small
JPEGs generated from FOLDER (enough images for a GPU run to last more than a moment).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tutorial import load as tutorial_load  # noqa: E402
from heads import cpu_flags  # noqa: E402
import writer  # noqa: E402
DEFAULT_FOLDER = HERE.parent.parent / "shared" / "datasets" / "flowers"
CACHE = HERE / ".cache"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- inputs ------------------------------------------------------------------------------------------------------
def image_files(folder: Path) -> list[Path]:
    from featstore.embed.source import scan_folder

    return [Path(f.path) for f in scan_folder(folder)[0]]


def make_big_set(folder: Path, n: int, megapixels: float = 12.0) -> Path:
    """n photos from FOLDER, each upscaled (bicubic) to about 12 MP and saved as JPEG quality 90, labels kept."""
    from PIL import Image

    out = CACHE / f"big{n}"
    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    files = image_files(folder)
    picks = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]

    def make(i, f):
        img = Image.open(f).convert("RGB")
        s = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        target = out / f.parent.name / f"big{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC).save(target, quality=90)
    _in_parallel(make, list(enumerate(picks)))
    done.touch()
    return out


def _in_parallel(fn, args: list[tuple]) -> None:
    """fn(*a) for each a on every core (Pillow releases the GIL while it resizes and encodes)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda a: fn(*a), args))


def make_many_set(folder: Path, n: int) -> Path:
    """n distinct small JPEGs (random crop, flip and brightness of FOLDER's photos, 320 px), for the memory run."""
    from PIL import Image, ImageEnhance

    out = CACHE / f"many{n}"
    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(0)
    sources = [Image.open(f).convert("RGB") for f in image_files(folder)]
    for d in range(n // 1000 + 1):
        (out / f"{d:03d}").mkdir(parents=True, exist_ok=True)

    def make(i, crop, flip, brightness):     # the random draws are made in order, below, so the set is seeded
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * crop[0]), int(h * crop[1])
        x, y = int(crop[2] * (w - cw + 1)), int(crop[3] * (h - ch + 1))
        im = img.crop((x, y, x + cw, y + ch)).resize((320, round(320 * ch / cw)))
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        ImageEnhance.Brightness(im).enhance(brightness).save(out / f"{i // 1000:03d}" / f"m{i:06d}.jpg", quality=85)
    _in_parallel(make, [(i, (rng.uniform(0.6, 1), rng.uniform(0.6, 1), rng.random(), rng.random()),
                         rng.random() < 0.5, rng.uniform(0.7, 1.3)) for i in range(n)])
    done.touch()
    return out


# ---- the machine's ceiling ---------------------------------------------------------------------------------------
def matmul_flops(threads: int, device: str = "cpu") -> float:
    """Measured float32 matrix-multiply FLOP/s (numpy BLAS, `threads` threads; on cuda torch, TF32 off), best of 5."""
    from threadpoolctl import threadpool_limits

    if device == "cuda":
        import torch

        a = torch.randn(8192, 8192, device="cuda")
        a @ a
        torch.cuda.synchronize()
        best = min(_timed(lambda: (a @ a, torch.cuda.synchronize())) for _ in range(5))
        return 2 * 8192 ** 3 / best

    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    with threadpool_limits(threads):
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048 ** 3 / best


def backbone_flops(onnx_path: Path, size: int) -> float:
    """Multiply-add FLOPs (2 x MACs) of one image through the graph's Conv nodes: every Conv output is exposed and
    the graph run once on one image in ONNX Runtime, so the shapes are the real ones (static shape inference stops
    at the padding arithmetic of this export)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n.output[0]) for n in convs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run([n.output[0] for n in convs],
                       {session.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)})
    return float(sum(2 * out.size * int(np.prod(inits[n.input[1]][1:])) for n, out in zip(convs, outs)))


def ceiling(onnx_path: Path, pixels: np.ndarray, pre, threads: int, device: str = "cpu",
            seconds: float = 5.0) -> float:
    """Pure inference images/s on pre-decoded images held on the host, featstore's batch size for the device,
    `threads` threads. CPU: normalised tensors (normalising not counted), the better of featstore's session
    settings and the same with ONNX Runtime's default spin-waiting (best for pure inference). CUDA: the uint8
    pixels through the session as featstore runs it (normalised inside the graph, on the GPU)."""
    from featstore.embed.backbones import session_for
    from featstore.embed.run import DEFAULT_BATCH
    from featstore.models.preprocess import normalise

    pixels = np.ascontiguousarray(np.resize(pixels, (DEFAULT_BATCH[device],) + pixels.shape[1:]))
    tensors = normalise(pixels, pre)
    best = 0.0
    for spin in ((False, True) if device == "cpu" else (False,)):
        b = session_for(onnx_path, device, pre, threads=threads, spin=spin)
        run = (lambda: b.run(tensors)) if device == "cpu" else (lambda: b.run_pixels(pixels, pre))
        run()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            run()
            n += len(pixels)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- the rows ----------------------------------------------------------------------------------------------------
def tutorial(files: list[Path], threads: int, device: str = "cpu") -> dict:
    """The loop a user writes: PyTorch eager, PIL decode + resize + crop image by image, batch 32."""
    import torch

    from featstore.models.catalog import resolve
    from featstore.models.torch_backbones import load_features

    torch.set_num_threads(threads)
    spec = resolve(None)
    size = spec.preprocess.size
    model = load_features(spec).eval().to(device)

    def load(path):
        return tutorial_load(path, size)

    with torch.no_grad():
        model(torch.zeros(32, 3, size, size, device=device)).cpu()       # warm-up, before the clock
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for i in range(0, len(files), 32):
            out.append(model(torch.stack([load(f) for f in files[i:i + 32]]).to(device)).cpu().numpy())
    seconds = time.perf_counter() - t0
    return {"row": f"tutorial: PyTorch eager ({device}) + PIL loop, batch 32", "images": len(files), "seconds": seconds,
            "images_per_second": len(files) / seconds}


def featstore_run(folder: Path, precision: str, threads: int, store_dir: Path, device: str = "cpu",
                  decode: str = "auto") -> dict:
    """featstore end to end, in process: files -> vectors in a fresh store (session started before the clock,
    as the tutorial's model is loaded before its clock; int8 calibration is timed separately)."""
    from featstore.embed.run import DEFAULT_BATCH
    from featstore.models.catalog import resolve
    from featstore.embed.local import embed_files
    from featstore.embed.backbones import open_backbone, session_for
    from featstore.embed.source import scan_folder
    from featstore.store.db import Store

    spec = resolve(None)
    files = scan_folder(folder)[0]
    shutil.rmtree(store_dir, ignore_errors=True)
    with Store.open(store_dir, write=True, create=True) as store:
        t0 = time.perf_counter()
        backbone, eset = open_backbone(spec, device=device, log=lambda *_: None, precision=precision, store=store,
                                       calibration_paths=[f.path for f in files])
        prepare = time.perf_counter() - t0
        graph = eset.onnx_path              # fp32, int8 or fp16 (before any pixel-input fusion)
        backbone = session_for(graph, device, spec.preprocess, threads=threads)
        if device == "cuda":        # warm-up, before the clock (first CUDA calls, cuDNN's algorithm search)
            size = spec.preprocess.size
            backbone.run_pixels(np.zeros((DEFAULT_BATCH[device], size, size, 3), np.uint8), spec.preprocess)
        backbone.session  # noqa: B018
        store.set_labels("flowers", {f.key: f.label for f in files if f.label})
        s = embed_files(store, files, backbone, eset, spec.preprocess, progress=False, source=str(folder),
                        decode=decode)
    row = f"featstore {device.upper() if device == 'cpu' else 'CUDA'} {precision}, end to end"
    return {"row": row + (f", decode {s.config['decode']}" if decode != "auto" else ""), "images": s.embedded,
            "seconds": s.seconds,
            "images_per_second": s.images_per_second, "prepare_seconds": prepare, "stages": s.stage_seconds,
            "config": s.config, "graph": str(graph)}


def decode_only(files: list[Path], spec) -> dict:
    """One thread, decode + resize only: the naive full decode vs featstore's (DCT-domain downscaling)."""
    from PIL import Image

    from featstore.embed.decode import read_pixels

    def naive(f):
        img = Image.open(f).convert("RGB")
        w, h = img.size
        side = min(w, h) * spec.preprocess.crop_fraction
        return np.asarray(img.resize((224, 224), Image.BICUBIC, box=((w - side) / 2, (h - side) / 2,
                                                                     (w + side) / 2, (h + side) / 2)))
    sample = files[:100]
    t_naive = _timed(lambda: [naive(f) for f in sample]) / len(sample)
    t_fs = _timed(lambda: [read_pixels(str(f), spec.preprocess) for f in sample]) / len(sample)
    return {"naive_ms": 1000 * t_naive, "featstore_ms": 1000 * t_fs}


def decode_alone(folder: Path, spec, workers: int, mode: str, device: str = "cuda") -> dict:
    """featstore's decode stage by itself, as the embed run drives it on the GPU machine (mode: 'processes' or
    'threads', `workers` of them, featstore's window; or 'device': nvImageCodec on the GPU and the crop/resize
    graph into the device batch), with no inference behind it: the most images/s decode can feed."""
    from featstore.embed import decode, decode_device, decode_pool
    from featstore.embed.local import Clock
    from featstore.embed.run import DEFAULT_BATCH
    from featstore.embed.source import scan_folder

    files = scan_folder(folder)[0]
    window = 2 * DEFAULT_BATCH["cuda"]
    t0 = time.perf_counter()
    if mode == "device":
        decoder = decode_device.open_decoder(spec.preprocess, device, window, DEFAULT_BATCH["cuda"])
        n = 0
        for prep in decode_device.device_decoded(files, spec.preprocess, set(), workers, window, Clock(), decoder):
            if prep.slot is not None:            # in its slot on the device, as the backbone would read it
                decoder.ring.give([prep.slot])
                n += 1
        extra = {"decoded_on_device": decoder.on_device, "decoded_on_cpu": decoder.on_cpu}
    else:
        stage = decode_pool.decoded if mode == "processes" else decode.decoded
        n = sum(1 for prep in stage(files, spec.preprocess, set(), workers, window, Clock())
                if prep.pixels is not None)
        extra = {}
    seconds = time.perf_counter() - t0
    what = "nvImageCodec + resize into device slots" if mode == "device" else f"{mode}, {workers} workers"
    return {"row": f"decode alone: featstore's decode stage ({what}), no inference", "images": n,
            "seconds": seconds, "images_per_second": n / seconds} | extra


def decode_ratios(folder: Path, spec, cores: int, repeats: int = 3) -> dict:
    """The process pool against the thread pool, decode alone (no inference), same files, same run: one worker
    process vs one thread, and `cores` worker processes vs `cores` threads (the window of a CUDA run). The runs
    alternate and each ratio is the median of `repeats` pairs; the forkserver is started by an untimed run first
    (a one-off of each embed run, reported on its own as `cold_start_seconds`: time to the first image)."""
    import statistics

    from featstore.embed import decode, decode_pool
    from featstore.embed.local import Clock
    from featstore.embed.run import DEFAULT_BATCH
    from featstore.embed.source import scan_folder

    files = scan_folder(folder)[0]
    window = 2 * DEFAULT_BATCH["cuda"]

    def rate(stage, workers):
        t0 = time.perf_counter()
        n = sum(1 for _ in stage(files, spec.preprocess, set(), workers, window, Clock()))
        return n / (time.perf_counter() - t0)
    cold = _cold_start(folder)
    rate(decode_pool.decoded, cores)          # untimed: the forkserver started, the page cache warm
    rates = {k: [] for k in ("threads_1", "processes_1", f"threads_{cores}", f"processes_{cores}")}
    for _ in range(repeats):
        for key in rates:
            mode, workers = key.split("_")
            rates[key].append(rate(decode_pool.decoded if mode == "processes" else decode.decoded, int(workers)))
    one = [p / t for p, t in zip(rates["processes_1"], rates["threads_1"])]
    many = [p / t for p, t in zip(rates[f"processes_{cores}"], rates[f"threads_{cores}"])]
    return {"images": len(files), "cores": cores, "repeats": repeats, "cold_start_seconds": cold,
            "images_per_second": {k: statistics.median(v) for k, v in rates.items()},
            "one_process_vs_one_thread": statistics.median(one),
            "processes_vs_threads": statistics.median(many),
            "threads_scaling": statistics.median(t / (cores * o) for t, o in
                                                 zip(rates[f"threads_{cores}"], rates["threads_1"]))}


def _cold_start(folder: Path) -> float:
    """Seconds from a fresh process's first call of the process stage (featstore imported) to its first image:
    the forkserver's start and the workers' (paid once per embed run)."""
    code = ("import sys, time; from featstore.embed import decode_pool; from featstore.embed.local import Clock; "
            "from featstore.embed.source import scan_folder; from featstore.models.catalog import resolve; "
            "files = scan_folder(sys.argv[1])[0][:1]; t0 = time.perf_counter(); "
            "next(decode_pool.decoded(files, resolve(None).preprocess, set(), 1, 8, Clock())); "
            "print(time.perf_counter() - t0)")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def accuracy(store_dir: Path) -> float:
    from featstore.heads.fit import evaluate_head, load_task
    from featstore.store.db import Store

    with Store.open(store_dir, write=True) as store:
        _, report = evaluate_head(load_task(store, "flowers"), "logreg")
    return report["test_accuracy"]


def agreement(fp32_store: Path, other_store: Path) -> dict:
    """Cosine between each item's fp32 vector and its vector in the other store (same content hash)."""
    from featstore.store.db import Store

    def vectors(path):
        with Store.open(path) as store:
            table = store.sets()[0].table
            rows = store.con.execute(f"SELECT hash, vector FROM {table} ORDER BY hash").fetchall()
        return {h: np.asarray(v, np.float32) for h, v in rows}
    a, b = vectors(fp32_store), vectors(other_store)
    cos = np.array([a[h] @ b[h] / (np.linalg.norm(a[h]) * np.linalg.norm(b[h])) for h in a if h in b])
    return {"items": len(cos), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}


def memory_run(folder: Path, store_dir: Path) -> dict:
    """`featstore embed` in a child process; its resident memory sampled every 0.25 s."""
    shutil.rmtree(store_dir, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store",
                             str(store_dir), "--no-progress", "--json", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    samples, t0 = [], time.perf_counter()
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024
            hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) * 1024
            samples.append((time.perf_counter() - t0, rss, hwm))
        except (OSError, StopIteration, ValueError):
            pass
        time.sleep(0.25)
    out = json.loads(proc.stdout.read())
    if proc.returncode:
        raise RuntimeError("featstore embed failed in the memory run")
    peak = max(s[2] for s in samples)
    quarters = {}
    for q in (0.25, 0.5, 0.75, 1.0):          # the highest RSS seen up to each quarter of the run's wall time
        upto = [s[1] for s in samples if s[0] <= q * samples[-1][0]]
        quarters[f"{int(q * 100)}%"] = max(upto) if upto else None
    return {"images": out["embedded"], "seconds": out["seconds"], "peak_rss_bytes": peak,
            "rss_by_quarter": quarters, "samples": len(samples)}


# ---- main --------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--big", type=int, default=100, help="images in the generated 12 MP set")
    ap.add_argument("--many", type=int, default=0, help="also: this many distinct small generated JPEGs (0: skip)")
    ap.add_argument("--memory-images", type=int, default=20000, help="images in the memory run (0: skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--writer-only", action="store_true", help="only the writer-alone row (under a minute)")
    ap.add_argument("--decode-ratios-only", action="store_true",
                    help="only decode alone, worker processes vs threads, on FOLDER (about a minute)")
    args = ap.parse_args()
    if args.decode_ratios_only:
        from featstore.models.catalog import resolve

        log(f"decode processes vs threads ({cpu_flags()}, {os.cpu_count()} cores, {args.threads} used) ...")
        dr = decode_ratios(Path(args.folder), resolve(None), args.threads, repeats=5)
        print(json.dumps({"cpu": cpu_flags(), "cores": os.cpu_count()} | dr, indent=2))
        return
    if args.writer_only:
        log(f"writer alone ({cpu_flags()}) ...")
        w = writer.writer_alone()
        log(f"writer thread alone, store close excluded: {w['thread_vectors_per_second']:.0f} vectors/s "
            f"(today's path: {w['todays_thread_vectors_per_second']:.0f})")
        print(writer.line(w))
        return

    from featstore.models.catalog import resolve
    from featstore.models.export import ensure_exported
    from featstore.embed.decode import read_pixels

    folder = Path(args.folder)
    spec = resolve(None)
    fp32_graph = ensure_exported(spec, log=log)
    low = "int8" if args.device == "cpu" else "fp16"     # the reduced precision each device is fast at
    log("generating the 12 MP set (once, cached) ...")
    inputs = [("flowers", folder), ("12MP", make_big_set(folder, args.big))]
    if args.many:
        log(f"generating {args.many} distinct small images (once, cached) ...")
        inputs.append((f"many{args.many}", make_many_set(folder, args.many)))
    work = Path(tempfile.mkdtemp(prefix="fs-throughput-"))
    result = {"machine": f"{platform.node()} {platform.machine()} ({_cpu_name()}), {os.cpu_count()} cores"
                         + (f", {_gpu_name()}" if args.device == "cuda" else ""),
              "cpu": cpu_flags(), "device": args.device, "threads": args.threads, "model": spec.name,
              "low_precision": low,
              "folder": str(folder), "inputs": {}}
    try:
        log("measuring matrix-multiply FLOP/s and the backbone's FLOPs ...")
        result["matmul_gflops"] = matmul_flops(args.threads, args.device) / 1e9
        result["backbone_gflops_per_image"] = backbone_flops(fp32_graph, spec.preprocess.size) / 1e9
        for name, inp in inputs:
            files = image_files(inp)
            log(f"[{name}] {len(files)} images: tutorial loop ...")
            rows = [tutorial(files, args.threads, args.device)]
            for precision in ("fp32", low):
                log(f"[{name}] featstore {precision} ...")
                rows.append(featstore_run(inp, precision, args.threads, work / f"{name}-{precision}", args.device))
            log(f"[{name}] ceilings ...")
            pixels = np.stack([read_pixels(str(f), spec.preprocess).pixels for f in files[:32]])
            ceil = {"fp32": ceiling(fp32_graph, pixels, spec.preprocess, args.threads, args.device),
                    low: ceiling(Path(rows[2]["graph"]), pixels, spec.preprocess, args.threads, args.device)}
            entry = {"rows": rows, "ceiling_images_per_second": ceil, "decode": decode_only(files, spec),
                     "agreement": agreement(work / f"{name}-fp32", work / f"{name}-{low}")}
            # Decode is not free. On the CPU, with every core busy in inference, each image also costs its decode
            # time on one core: the best any pipeline can do is 1 / (1/ceiling + decode/cores). On the GPU the
            # cores only decode: the best is min(ceiling, cores/decode).
            decode_s = entry["decode"]["featstore_ms"] / 1000
            entry["core_bound_images_per_second"] = (1 / (1 / ceil["fp32"] + decode_s / args.threads)
                                                     if args.device == "cpu" else
                                                     min(ceil["fp32"], args.threads / decode_s))
            tut, fp32, lowp = (r["images_per_second"] for r in rows)
            entry["ratios"] = {"fp32_vs_tutorial": fp32 / tut, "fp32_of_ceiling": fp32 / ceil["fp32"],
                               "core_bound_of_ceiling": entry["core_bound_images_per_second"] / ceil["fp32"],
                               f"{low}_vs_fp32": lowp / fp32, f"{low}_of_{low}_ceiling": lowp / ceil[low],
                               f"{low}_ceiling_vs_fp32_ceiling": ceil[low] / ceil["fp32"]}
            if args.device == "cuda":            # which stage limits the run: decode alone vs the ceiling
                entry["decode_alone"] = decode_alone(inp, spec, args.threads, "processes" if args.threads > 2
                                                     and len(files) > 4 * 128 else "threads")
                from featstore.embed.decode_device import unavailable

                if not unavailable(spec.preprocess):     # decode on the device: alone, and end to end
                    log(f"[{name}] device decode ...")
                    entry["device_decode_alone"] = decode_alone(inp, spec, args.threads, "device")
                    entry["device_decode"] = featstore_run(inp, "fp32", args.threads, work / f"{name}-device",
                                                           "cuda", decode="device")
                    entry["ratios"]["device_decode_fp32_of_ceiling"] = (entry["device_decode"]["images_per_second"]
                                                                        / ceil["fp32"])
            if name == "flowers":
                entry["accuracy"] = {p: accuracy(work / f"{name}-{p}") for p in ("fp32", low)}
                log(f"[{name}] decode processes vs threads ...")
                entry["decode_ratios"] = decode_ratios(inp, spec, args.threads)
            result["inputs"][name] = entry
        log("writer alone ...")
        result["writer"] = writer.writer_alone()
        if args.memory_images:
            log(f"generating {args.memory_images} distinct images (once, cached) ...")
            many = make_many_set(folder, args.memory_images)
            log("memory run ...")
            result["memory"] = memory_run(many, work / "memory")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["targets"] = targets(result)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "throughput.json").write_text(json.dumps(result, indent=2))
    write(result, Path(args.out))


def targets(r: dict) -> dict:
    fl, big, low = r["inputs"]["flowers"], r["inputs"]["12MP"], r["low_precision"]
    acc = fl["accuracy"]
    out = {"fp32_ge_4x_tutorial_on_flowers": fl["ratios"]["fp32_vs_tutorial"] >= 4,
           "fp32_ge_85pct_of_ceiling_on_flowers": fl["ratios"]["fp32_of_ceiling"] >= 0.85,
           "fp32_ge_60pct_of_ceiling_on_12MP": big["ratios"]["fp32_of_ceiling"] >= 0.60,
           f"{low}_accuracy_within_1_point": abs(acc[low] - acc["fp32"]) <= 0.01}
    if low == "int8":
        out["int8_ge_1.6x_fp32_on_flowers"] = fl["ratios"]["int8_vs_fp32"] >= 1.6
    if "memory" in r:
        out["peak_rss_le_1.5GB"] = r["memory"]["peak_rss_bytes"] <= 1.5e9
    for name, e in r["inputs"].items():            # the GPU machine's acceptance: end to end >= half the ceiling
        if r["device"] == "cuda":
            best = max([e["ratios"]["fp32_of_ceiling"]] + [e["ratios"].get("device_decode_fp32_of_ceiling", 0)])
            out[f"cuda_end_to_end_ge_50pct_of_ceiling_on_{name}"] = best >= 0.5
    dr = fl["decode_ratios"]
    out["decode_one_process_ge_95pct_of_one_thread"] = dr["one_process_vs_one_thread"] >= 0.95
    out[f"decode_{dr['cores']}_processes_ge_85pct_of_{dr['cores']}_threads"] = dr["processes_vs_threads"] >= 0.85
    out["writer_ge_20000_vectors_per_s"] = r["writer"]["vectors_per_second"] >= 20000
    out["writer_ge_4x_previous_path"] = r["writer"]["ratio"] >= 4
    return out


def write(r: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(r, indent=2))
    low = r["low_precision"]
    md = [f"# Embedding throughput ({r['model']}, {r['device']}, {r['threads']} threads)", "",
          f"machine: {r['machine']}", f"CPU: {r['cpu']}", "",
          f"matrix multiply: {r['matmul_gflops']:.0f} GFLOP/s measured; backbone: "
          f"{r['backbone_gflops_per_image']:.3f} GFLOP per image, so at that rate at most "
          f"{r['matmul_gflops'] / r['backbone_gflops_per_image']:.0f} images/s", ""]
    for name, e in r["inputs"].items():
        c = e["ceiling_images_per_second"]
        md += [f"## {name}", "", "| row | images | s | images/s | vs tutorial | of fp32 ceiling |",
               "|---|---|---|---|---|---|"]
        tut = e["rows"][0]["images_per_second"]
        for row in e["rows"]:
            md.append(f"| {row['row']} | {row['images']} | {row['seconds']:.1f} | {row['images_per_second']:.1f} | "
                      f"{row['images_per_second'] / tut:.1f}x | {row['images_per_second'] / c['fp32']:.0%} |")
        for p in ("fp32", low):
            md.append(f"| ceiling: ONNX Runtime {p} on pre-decoded tensors | | | {c[p]:.1f} | {c[p] / tut:.1f}x | "
                      f"{c[p] / c['fp32']:.0%} |")
        d = e["decode"]
        gflops = r["backbone_gflops_per_image"] * c["fp32"]
        bound = e["core_bound_images_per_second"]
        md += ["", f"fp32 inference runs at {gflops:.0f} GFLOP/s ({gflops / r['matmul_gflops']:.0%} of the measured "
                   f"matrix-multiply rate). Decode + resize, one thread: naive {d['naive_ms']:.1f} ms/image, "
                   f"featstore {d['featstore_ms']:.1f} ms/image. "
                   + (f"With inference using all {r['threads']} cores, " if r["device"] == "cpu" else
                      f"Decoding on {r['threads']} cores while the GPU infers, ")
                   + f"that decode caps files -> vectors at {bound:.1f} images/s ({bound / c['fp32']:.0%} of the "
                   f"ceiling) for any pipeline on this machine; featstore fp32 reaches "
                   f"{e['rows'][1]['images_per_second'] / bound:.0%} of that cap.",
               f"{low}: " + ", ".join(f"{k} {v:.2f}" for k, v in e["ratios"].items() if low in k)
               + f"; one-off preparation {e['rows'][2]['prepare_seconds']:.1f} s; vectors vs fp32: mean cosine "
               f"{e['agreement']['mean_cosine']:.4f}, min {e['agreement']['min_cosine']:.4f}"]
        if "accuracy" in e:
            md.append(f"fit-head logreg held-out accuracy: fp32 {e['accuracy']['fp32']:.1%}, {low} "
                      f"{e['accuracy'][low]:.1%}")
        for key in ("decode_alone", "device_decode_alone", "device_decode"):
            if key in e:
                da = e[key]
                md.append(f"{da['row']}: {da['images_per_second']:.1f} images/s "
                          f"({da['images_per_second'] / c['fp32']:.0%} of the fp32 ceiling)")
        if "decode_ratios" in e:
            dr = e["decode_ratios"]
            rates = ", ".join(f"{k.replace('_', ' ')} {v:.0f}/s" for k, v in dr["images_per_second"].items())
            md.append(f"decode alone, worker processes vs threads ({dr['images']} images, median of {dr['repeats']} "
                      f"alternated runs): 1 process {dr['one_process_vs_one_thread']:.0%} of 1 thread, "
                      f"{dr['cores']} processes {dr['processes_vs_threads']:.0%} of {dr['cores']} threads ({rates}; "
                      f"{dr['cores']} threads = {dr['threads_scaling']:.0%} of {dr['cores']} x 1 thread); the pool's "
                      f"one-off start, first image after {dr['cold_start_seconds']:.2f} s")
        st = e["rows"][1]["stages"]
        md += ["featstore fp32 stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()), ""]
    w = r["writer"]
    md += ["## Writer alone", "", f"{w['vectors']:,} random {w['dim']}-d vectors with their item rows, batches of "
           f"{w['batch']}, through the writer thread into a fresh store (median of {w['repeats']}, store closed "
           f"included): {writer.line(w)[len('writer alone: '):]}, {w['ratio']:.1f}x; the writer thread's own "
           f"rate (store close excluded) {w['thread_vectors_per_second']:.0f} vectors/s (today's path: "
           f"{w['todays_thread_vectors_per_second']:.0f})", ""]
    if "memory" in r:
        m = r["memory"]
        md += ["## Memory", "", f"`featstore embed` of {m['images']} generated images in {m['seconds']:.0f} s: peak "
               f"resident memory {m['peak_rss_bytes'] / 1e9:.2f} GB; highest RSS by quarter of the run: "
               + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in m["rss_by_quarter"].items() if v), ""]
    md += ["targets: " + json.dumps(r["targets"])]
    (out / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown GPU"
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
