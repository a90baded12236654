"""Uploads added to the store when a client asks (never otherwise): each file is kept under STORE/uploads/ by
content hash and that folder is embedded by a child process through featstore's Python API, one job at a time.
The serving process itself never takes the writer lock (the child waits for it like any `embed --wait`), and the
new items are served once the refresher takes the next snapshot."""
from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.hashing import content_hash

UPLOADS = "uploads"
KEEP_JOBS = 200             # finished jobs remembered for GET /jobs/{id}

# the child: embed the uploads folder with the set's backbone, print the summary as one JSON line
_CHILD = """import json, sys
import featstore
try:
    s = featstore.open(sys.argv[1]).embed(sys.argv[2], model=sys.argv[3], precision=sys.argv[4], wait=True,
                                          progress=False, log=lambda _m: None)
except featstore.FeatstoreError as exc:
    sys.exit(str(exc))
print(json.dumps({"embedded": s.embedded, "copies": s.copies, "already": s.already, "failed": s.failed,
                  "failures": [str(f) for f in s.failures], "set_id": s.set_id}))
"""


class Adder:
    """Keeps uploads and embeds them into the store at `root`, in the background, one job after another."""

    def __init__(self, root: str | Path, read_only: bool):
        self.root = Path(root)
        self.folder = self.root / UPLOADS
        self.read_only = read_only
        self._jobs: dict[int, dict] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, files: list[tuple[str, str]], model: str, precision: str) -> dict:
        """Keep these (client name, local path) uploads and queue their embedding with `model`: the job, as
        GET /jobs/{id} shows it."""
        if self.read_only:
            raise FeatstoreError("this server runs --read-only: nothing is added to the store")
        self.folder.mkdir(exist_ok=True)
        kept = [{"name": name, "path": str(self._keep(path))} for name, path in files]
        job = {"id": next(self._ids), "status": "queued", "files": kept, "model": model, "precision": precision,
               "queued_at": time.strftime("%Y-%m-%d %H:%M:%S"), "result": None, "error": None}
        with self._lock:
            self._jobs[job["id"]] = job
            for old in sorted(self._jobs)[:-KEEP_JOBS]:
                del self._jobs[old]
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="featstore-adds", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return dict(job)

    def job(self, job_id: int) -> dict:
        with self._lock:
            if job_id not in self._jobs:
                raise FeatstoreError(f"no add job with id {job_id}")
            return dict(self._jobs[job_id])

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _keep(self, path: str) -> Path:
        """The upload under uploads/, named by its content hash (the same image uploaded twice is one file)."""
        target = self.folder / f"{content_hash(Path(path).read_bytes())}{Path(path).suffix}"
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return target

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._set(job, status="running")
            try:
                done = subprocess.run([sys.executable, "-c", _CHILD, str(self.root), str(self.folder), job["model"],
                                       job["precision"]], capture_output=True, text=True)
                lines = done.stdout.strip().splitlines()
                if done.returncode == 0 and lines:
                    self._set(job, status="done", result=json.loads(lines[-1]))
                else:
                    why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                    self._set(job, status="failed", error=why)
            except Exception as exc:            # the job fails, the server goes on
                self._set(job, status="failed", error=f"{type(exc).__name__}: {exc}")

    def _set(self, job: dict, **fields) -> None:
        with self._lock:
            job.update(fields)
