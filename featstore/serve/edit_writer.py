"""The server's writer for curation: the serving process never takes the store's writer lock, so each edit a client
sends is made by a child process through featstore's Python API, as uploads are (adds.py).

One long-lived child takes the edits one at a time from its stdin (a JSON line each) and answers each with a
JSON line once it is committed: it opens the store for writing per edit and closes it after, so readers, the
server's snapshots and other writers are never kept out between edits. A busy store (another writer) is waited
for up to LOCK_WAIT_S; an edit that gets no answer within TIMEOUT_S ends the child (the next edit starts a new
one). A refit (fit-head on the current labels) runs in a child of its own (`refit`), which may take minutes.

Run as `python -m featstore.serve.edit_writer ROOT` (the edit child) or `... --refit ROOT TASK KIND`.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from featstore.errors import FeatstoreError

TIMEOUT_S = 60.0           # an edit not answered by then: the child is ended, the client told
LOCK_WAIT_S = 45.0         # how long the child waits for another writer (an embed, a fit) to let go
REFIT_TIMEOUT_S = 600.0
MAX_WAITING = 8            # edits waiting for the child at once; more are refused (the server's threads stay free)


class WriterBusy(FeatstoreError):
    """The store stayed held by another writer (HTTP 409)."""


class WriterTimeout(FeatstoreError):
    """The child gave no answer in time (HTTP 504)."""


class WriterCrowded(FeatstoreError):
    """Too many edits already wait for the child (HTTP 429)."""


class EditWriter:
    """Sends edits to the child process over the store at `root`, one at a time (start it lazily, end it on
    close)."""

    def __init__(self, root: str | Path, timeout: float = TIMEOUT_S, lock_wait: float = LOCK_WAIT_S):
        self.root = Path(root)
        self.timeout = timeout
        self.lock_wait = lock_wait
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._waiting = threading.BoundedSemaphore(MAX_WAITING)

    def request(self, op: str, **args) -> dict:
        """The child's result of one operation (edit, undo); FeatstoreError (WriterBusy, WriterTimeout,
        WriterCrowded) when it could not be done."""
        if not self._waiting.acquire(blocking=False):
            raise WriterCrowded(f"{MAX_WAITING} edits are already waiting for the store's writer; try again shortly")
        try:
            return self._request(op, args)
        finally:
            self._waiting.release()

    def _request(self, op: str, args: dict) -> dict:
        with self._lock:
            child = self._running()
            try:
                child.stdin.write(json.dumps({"op": op, "args": args, "lock_wait": self.lock_wait}) + "\n")
                child.stdin.flush()
                reply = self._replies.get(timeout=self.timeout)
            except queue.Empty:
                self._end()
                raise WriterTimeout(f"the store's writer did not answer within {self.timeout:g} s; the edit may or "
                                    "may not be stored (GET /edits lists what is)") from None
            except (BrokenPipeError, OSError):
                self._end()
                raise FeatstoreError("the store's writer process ended; try again") from None
        if reply is None:
            with self._lock:
                self._end()
            raise FeatstoreError("the store's writer process ended; try again")
        if not reply.get("ok"):
            raise (WriterBusy if reply.get("busy") else FeatstoreError)(reply.get("error", "failed"))
        return reply["result"]

    def close(self) -> None:
        with self._lock:
            self._end()

    def _running(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            self._replies = queue.Queue()
            self._child = subprocess.Popen([sys.executable, "-m", "featstore.serve.edit_writer", str(self.root)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            threading.Thread(target=_pump, args=(self._child.stdout, self._replies), daemon=True,
                             name="featstore-edit-replies").start()
        return self._child

    def _end(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.stdin.close()
            child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()


def _pump(stream, replies: queue.Queue) -> None:
    """The child's answer lines, as dicts, onto `replies` (None once it ends)."""
    for line in stream:
        try:
            replies.put(json.loads(line))
        except ValueError:
            continue
    replies.put(None)


def refit(root: str | Path, task: str, kind: str, timeout: float = REFIT_TIMEOUT_S) -> dict:
    """Fit the task's head (kind logreg, or 'all': the leaderboard) on the current labels in a child process:
    {"leaderboard": rows, "confusion": the best head's held-out confusion matrix, ...}."""
    try:
        done = subprocess.run([sys.executable, "-m", "featstore.serve.edit_writer", "--refit", str(root), task, kind],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FeatstoreError(f"the refit did not finish within {timeout:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    raise FeatstoreError((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])


# ---- the child ------------------------------------------------------------------------------------------------
def _edit(fs, args: dict) -> dict:
    """One edit sent by the server: action, task, ids, label, tag, reason, who."""
    action, ids, who = args["action"], args.get("ids") or [], args.get("who")
    task = args.get("task")
    if action in ("label", "unlabel") and not task:
        raise FeatstoreError(f"task: {action} needs the task whose label it sets")
    if action == "label":
        return fs.set_labels(task, ids, args.get("label"), who=who)
    if action == "unlabel":
        return fs.set_labels(task, ids, None, who=who)
    if action in ("tag", "untag"):
        return fs.tag(ids, args.get("tag"), remove=action == "untag", who=who)
    if action == "exclude":
        return fs.exclude(ids, reason=args.get("reason") or "excluded", who=who)
    if action == "include":
        return fs.include(ids, who=who)
    if action == "accept":
        return fs.accept(task, None, only=ids, who=who)
    raise FeatstoreError(f"action: unknown {action!r}")


def _answer(fs, request: dict) -> dict:
    op, args = request.get("op"), request.get("args") or {}
    deadline = time.monotonic() + min(float(request.get("lock_wait", LOCK_WAIT_S)), LOCK_WAIT_S)
    while True:
        try:
            if op == "edit":
                return _edit(fs, args)
            if op == "undo":
                return fs.undo(args.get("edit"), who=args.get("who"))
            raise FeatstoreError(f"unknown operation {op!r}")
        except FeatstoreError as exc:
            if " is being written" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _child(root: str) -> None:
    import featstore

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything printed on the way (Python or C) goes to the log, not the answers
    sys.stdout = sys.stderr
    fs = featstore.open(root)
    for line in sys.stdin:
        try:
            reply = {"ok": True, "result": _answer(fs, json.loads(line))}
        except FeatstoreError as exc:
            reply = {"ok": False, "error": str(exc), "busy": " is being written" in str(exc)}
        except Exception as exc:          # the edit fails, the child goes on
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply, default=str) + "\n")


def _refit_child(root: str, task: str, kind: str) -> None:
    import featstore

    from featstore.heads.evaluate import main_metric

    fs = featstore.open(root)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            out = fs.fit_head(task, head=kind, force=True)
            break
        except FeatstoreError as exc:
            if " is being written" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    if "rows" in out:
        rows = [{k: r[k] for k in r if k != "confusion"} for r in out["rows"]]
        confusion = out["rows"][0].get("confusion") if out["rows"] else None
        n_train, n_test = out["n_train"], out["n_test"]
    else:
        metric, value = main_metric(out["metrics"])
        rows = [{"head": out["name"], "kind": out["kind"], "metric": metric, "value": value,
                 "fit_seconds": out["metrics"]["fit_seconds"]}]
        confusion = out["metrics"].get("confusion")
        n_train, n_test = out["metrics"]["n_train"], out["metrics"]["n_test"]
    print(json.dumps({"task": task, "kind": kind, "model": out["model"], "n_train": n_train, "n_test": n_test,
                      "leaderboard": rows, "confusion": confusion}, default=str))


def main(argv: list[str]) -> None:
    try:
        if argv[:1] == ["--refit"]:
            _refit_child(*argv[1:4])
        else:
            _child(argv[0])
    except FeatstoreError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
