"""Decode in processes: the embed pipeline's decode stage for a GPU machine, where the cores do nothing but decode.

Threads share one interpreter lock. With a few threads beside a CPU backbone that is fine (Pillow releases the
lock while it decodes and resizes), but a GPU outruns a dozen decoding threads, and then the Python between the
C calls (open, read, hash, Pillow's own Python) serialises them and starves the embed loop's thread too. Here each
worker is a process that decodes straight into a ring of pixel slots in shared memory (a file in /dev/shm mapped
by every process), and sends back only the small record (hash, size, error). Files go out in chunks of a few,
in order, a bounded window ahead; a slot is reused only once the embed loop has copied its pixels out.

The pool is a lean one of its own rather than concurrent.futures' ProcessPoolExecutor: a chunk costs one message
each way (the workers take chunks from one shared pipe as they become free, and answer on a pipe each), read and
written by the consumer's own thread. The executor's queue-feeder and manager threads, futures and wake-ups cost
about a millisecond per chunk, which on small photos was 5-10 % of a worker's time spent idle between chunks.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import traceback
from collections import deque
from multiprocessing.connection import wait

import numpy as np
from PIL import Image

from featstore.embed.decode import Prepared, read_pixels
from featstore.errors import FeatstoreError

CHUNK = 8            # files per message: the per-message cost is paid once for several images

# Pillow imports its common format plugins at the first image it opens (~30 ms); done here, at import, they come
# already imported into every worker forked from the forkserver (which imports this module) instead.
Image.preinit()


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as its cause in the parent."""

    def __str__(self) -> str:
        return self.args[0]


def _serve(slots_path: str, shape: tuple, pre, known: frozenset, tasks, lock, results) -> None:
    """A worker: take a chunk of (path, slot) from `tasks` (shared by the workers; `lock` held to read one
    message), decode each file's pixels into its slot, and send (chunk number, records without pixels) back on
    `results` (its own pipe) until told to stop (None)."""
    slots = np.memmap(slots_path, np.uint8, "r+", shape=shape).view(np.ndarray)
    while True:
        with lock:
            job = pickle.loads(tasks.recv_bytes())
        if job is None:
            return
        number, todo = job
        try:
            out = []
            for path, slot in todo:
                prep = read_pixels(path, pre, known)
                if prep.pixels is not None:
                    slots[slot] = prep.pixels
                    prep.pixels = slot                  # where the parent finds them
                out.append(prep)
        except Exception as exc:                       # noqa: BLE001  (raised in the parent, in listing order)
            results.send((number, _picklable(exc), traceback.format_exc()))
        else:
            results.send((number, out, None))


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:                                  # noqa: BLE001
        return FeatstoreError(f"{type(exc).__name__}: {exc}")


def decoded(todo: list, pre, known: set, workers: int, window: int, clock):
    """(Prepared) in listing order, like embed.decoded, with `pixels` a view of a shared slot that stays valid
    until the consumer asks for the next item."""
    size = len(todo)
    n_slots = window + CHUNK
    shape = (n_slots, pre.size, pre.size, 3)
    fd, path = tempfile.mkstemp(prefix="featstore-pixels-", dir=_slots_folder(int(np.prod(shape))))
    procs: list = []
    finished = False
    try:
        os.ftruncate(fd, int(np.prod(shape)))
        slots = np.memmap(path, np.uint8, "r+", shape=shape).view(np.ndarray)   # plain ndarray: cheap to index
        context = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
        if context.get_start_method() == "forkserver":   # workers forked with featstore already imported
            context.set_forkserver_preload(["featstore.embed.decode", "featstore.embed.decode_pool"])
        tasks_in, tasks = context.Pipe(duplex=False)
        lock = context.Lock()
        budget = _pipe_budget(tasks)
        readers: dict = {}                      # result pipe -> its worker
        frozen = frozenset(known)
        for i in range(max(1, workers)):
            reader, writer = context.Pipe(duplex=False)
            proc = context.Process(target=_serve, args=(path, shape, pre, frozen, tasks_in, lock, writer),
                                   name=f"featstore-decode-{i}", daemon=True)
            proc.start()
            writer.close()                      # the worker's end: its death reads as the end of the pipe
            procs.append(proc)
            readers[reader] = proc
        tasks_in.close()

        queue: deque = deque()                  # (chunk number, its files), in listing order, sent
        done: dict = {}                         # chunk number -> (records, error, traceback)
        sent_bytes: dict = {}                   # chunk number -> bytes of its message, until its answer
        state = {"sent": 0, "number": 0, "in_pipe": 0}

        def receive(block: bool) -> None:
            """Take the answers waiting (block: wait for at least one)."""
            ready = wait(list(readers), None if block else 0)
            for reader in ready:
                try:
                    number, out, tb = reader.recv()
                except (EOFError, OSError):
                    raise _died() from None
                done[number] = (out, tb)
                state["in_pipe"] -= sent_bytes.pop(number, 0)

        def send_while_room(consumer_at: int) -> None:
            # a chunk may go out when none of its slots belongs to an item not yet consumed, and when its message
            # fits in the task pipe beside those not yet answered (so that this write never blocks)
            while state["sent"] < size and state["sent"] + CHUNK - consumer_at <= n_slots:
                start, number = state["sent"], state["number"]
                chunk = todo[start:start + CHUNK]
                work = [(f.path, (start + i) % n_slots) for i, f in enumerate(chunk) if not f.error]
                if work:
                    message = pickle.dumps((number, work), pickle.HIGHEST_PROTOCOL)
                    cost = len(message) + 16
                    if state["in_pipe"] and state["in_pipe"] + cost > budget:
                        receive(block=False)
                        if state["in_pipe"] and state["in_pipe"] + cost > budget:
                            return                  # sent later, as answers come back
                    tasks.send_bytes(message)
                    state["in_pipe"] += cost
                    sent_bytes[number] = cost
                else:
                    done[number] = ([], None)
                queue.append((number, chunk))
                state["number"] += 1
                state["sent"] += len(chunk)

        at = 0
        send_while_room(at)
        while queue:
            number, chunk = queue.popleft()
            t0 = time.perf_counter()
            while number not in done:
                receive(block=True)
                send_while_room(at)
            clock.add("waiting for decode", time.perf_counter() - t0)
            out, tb = done.pop(number)
            if tb is not None:
                raise out from _RemoteTraceback(tb)
            results = iter(out)
            for f in chunk:
                prep = Prepared(file=f, error=f.error) if f.error else next(results)
                prep.file = f
                clock.add("decode CPU (workers)", prep.seconds)
                if prep.pixels is not None:
                    prep.pixels = slots[prep.pixels]
                send_while_room(at)      # every slot before `at` has been consumed
                yield prep
                at += 1
        finished = True
    finally:
        _stop(procs, tasks if procs else None, finished)
        os.close(fd)
        os.unlink(path)


def _stop(procs: list, tasks, finished: bool) -> None:
    """Workers told to stop when the run went through; terminated when it did not (an error, or the consumer
    stopped early): nothing of theirs is needed any more."""
    if finished:
        try:
            for _ in procs:
                tasks.send_bytes(pickle.dumps(None))
        except OSError:
            finished = False
    for proc in procs:
        if not finished and proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if tasks is not None:
        tasks.close()


def _pipe_budget(conn) -> int:
    """Bytes of task messages that may wait in the task pipe at once: half its capacity, so the parent's write
    never blocks (a blocked parent would not read the answers the workers may be blocked writing)."""
    try:
        import fcntl

        return fcntl.fcntl(conn.fileno(), fcntl.F_GETPIPE_SZ) // 2
    except (ImportError, AttributeError, OSError):
        return 8192                 # a pipe holds at least 16 KiB on the systems with no F_GETPIPE_SZ


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
