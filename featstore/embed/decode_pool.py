"""Decode in processes: the embed pipeline's decode stage for a GPU machine, where the cores do nothing but decode.

Threads share one interpreter lock. With a few threads beside a CPU backbone that is fine (Pillow releases the
lock while it decodes and resizes), but a GPU outruns a dozen decoding threads, and then the Python between the
C calls (open, read, hash, Pillow's own Python) serialises them and starves the embed loop's thread too. Here each
worker is a process that decodes straight into a ring of pixel slots in shared memory (a file in /dev/shm mapped
by every process), and sends back only the small record (hash, size, error). Files go out in chunks of a few,
in order, a bounded window ahead; a slot is reused only once the embed loop has copied its pixels out.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from featstore.embed.decode import Prepared, read_pixels
from featstore.errors import FeatstoreError

CHUNK = 8            # files per task: the per-task cost of a process pool is paid once for several images

_worker = {}         # in each worker process: the slots, the preprocessing, the hashes already stored


def _start(slots_path: str, shape: tuple, pre, known: frozenset) -> None:
    _worker.update(slots=np.memmap(slots_path, np.uint8, "r+", shape=shape), pre=pre, known=known)


def _decode(tasks: list[tuple[str, int]]) -> list:
    """Decode each (path, slot): pixels into the slot, the record (without pixels) back to the parent."""
    out = []
    for path, slot in tasks:
        prep = read_pixels(path, _worker["pre"], _worker["known"])
        if prep.pixels is not None:
            _worker["slots"][slot] = prep.pixels
            prep.pixels = slot                  # where the parent finds them
        out.append(prep)
    return out


def decoded(todo: list, pre, known: set, workers: int, window: int, clock):
    """(Prepared) in listing order, like embed.decoded, with `pixels` a view of a shared slot that stays valid
    until the consumer asks for the next item."""
    size = len(todo)
    n_slots = window + CHUNK
    shape = (n_slots, pre.size, pre.size, 3)
    fd, path = tempfile.mkstemp(prefix="featstore-pixels-", dir=_slots_folder(int(np.prod(shape))))
    try:
        os.ftruncate(fd, int(np.prod(shape)))
        slots = np.memmap(path, np.uint8, "r+", shape=shape)
        context = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
        if context.get_start_method() == "forkserver":   # workers forked with featstore already imported
            context.set_forkserver_preload(["featstore.embed.decode", "featstore.embed.decode_pool"])
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start,
                                 initargs=(path, shape, pre, frozenset(known))) as pool:
            pending: deque = deque()
            submitted = 0

            def submit_while_room(consumer_at: int) -> None:
                # a chunk may go out when none of its slots belongs to an item not yet consumed
                nonlocal submitted
                while submitted < size and submitted + CHUNK - consumer_at <= n_slots:
                    chunk = todo[submitted:submitted + CHUNK]
                    tasks = [(f.path, (submitted + i) % n_slots) for i, f in enumerate(chunk)]
                    try:
                        future = pool.submit(_decode, [t for t, f in zip(tasks, chunk) if not f.error])
                    except BrokenProcessPool:
                        raise _died() from None
                    pending.append((chunk, future))
                    submitted += len(chunk)

            at = 0
            submit_while_room(at)
            while pending:
                chunk, future = pending.popleft()
                t0 = time.perf_counter()
                try:
                    results = iter(future.result())
                except BrokenProcessPool:
                    raise _died() from None
                clock.add("waiting for decode", time.perf_counter() - t0)
                for f in chunk:
                    prep = Prepared(file=f, error=f.error) if f.error else next(results)
                    prep.file = f
                    clock.add("decode CPU (workers)", prep.seconds)
                    if prep.pixels is not None:
                        prep.pixels = slots[prep.pixels]
                    submit_while_room(at)      # every slot before `at` has been consumed
                    yield prep
                    at += 1
    finally:
        os.close(fd)
        os.unlink(path)


def _died() -> FeatstoreError:
    return FeatstoreError("a decode worker process died (killed, out of memory or crashed); the batches written so "
                          "far are stored: run the same command again to go on (--decode threads uses no processes)")


def _slots_folder(size: int) -> str | None:
    """/dev/shm when it has room to spare (a container's is often only 64 MB, and a full tmpfs kills the writer
    with SIGBUS), else the temporary folder (a file there is mapped through the page cache just the same)."""
    try:
        st = os.statvfs("/dev/shm")
        return "/dev/shm" if st.f_bavail * st.f_frsize > 2 * size else None
    except OSError:
        return None
