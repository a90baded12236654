"""What a serving process holds: the current snapshot of the store (refreshed in the background once a writer has
committed and let go), the backbones it has opened, and where thumbnails and maps are cached."""
from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.serve.adds import Adder
from featstore.store import snapshot as snapshots

CHECK_EVERY_S = 1.0         # how often the refresher looks at the store's files
KEEP_OLD_S = 60.0           # a replaced snapshot is closed this long after, when no request still reads it


class ServerState:
    """The store as served. `read_only`: write nothing into the store folder (thumbnails and maps go to a
    temporary folder instead)."""

    def __init__(self, root: str | Path, read_only: bool = False, refresh: bool = True):
        _one_faiss_thread()
        self.root = Path(root)
        self.read_only = read_only
        self.work = Path(tempfile.mkdtemp(prefix="featstore-serve-"))
        cache_root = self.work if read_only else self.root
        self.thumbs = cache_root / "thumbs"
        self.maps = cache_root / "maps"
        self.backbones: dict = {}
        self.adds = Adder(self.root, read_only)       # uploads added to the store when a client asks
        self.lock = threading.Lock()
        self.pending: str | None = None        # why the newest commits are not served yet
        self._retired: list = []
        snap, why = snapshots.try_take(self.root, self.work)
        if snap is None:
            raise FeatstoreError(why)
        _warm(snap)
        self.snapshot = snap
        self._stop = threading.Event()
        self._thread = None
        if refresh:
            self._thread = threading.Thread(target=self._refresh_loop, name="featstore-snapshot", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def reading(self):
        """A Store over the current snapshot for one request, and the snapshot itself."""
        _one_faiss_thread()
        snap = self.snapshot
        store = snap.reader()
        try:
            yield store, snap
        finally:
            store.close()

    def refresh_now(self) -> bool:
        """Take a new snapshot if the store changed and no writer holds it; True when one was taken."""
        if snapshots.signature(self.root) == self.snapshot.signature:
            self.pending = None
            return False
        snap, why = snapshots.try_take(self.root, self.work)
        if snap is None:
            self.pending = why
            return False
        _warm(snap)          # read before it is served: requests after the switch wait for nothing
        with self.lock:
            old, self.snapshot, self.pending = self.snapshot, snap, None
            self._retired.append((time.monotonic(), old))
        self._close_retired()
        return True

    def _close_retired(self, everything: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            done = [r for r in self._retired if everything or now - r[0] > KEEP_OLD_S]
            self._retired = [r for r in self._retired if r not in done]
        for _, snap in done:
            snap.close()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.refresh_now()
                self._close_retired()
            except Exception as exc:        # keep serving the last snapshot; say why on /stats
                self.pending = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.adds.close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_retired(everything=True)
        self.snapshot.close()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


def _warm(snap) -> None:
    try:
        snap.warm()
    except BaseException:
        snap.close()
        raise


_threads = threading.local()


def _one_faiss_thread() -> None:
    """FAISS runs one thread per query in this thread: requests run side by side, and OpenMP's thread count is
    a per-thread setting (a request thread would otherwise start its own team on every core)."""
    if not getattr(_threads, "faiss_one", False):
        from featstore import runtimes
        faiss = runtimes.faiss()

        faiss.omp_set_num_threads(1)
        _threads.faiss_one = True
