"""The web app's write routes for curation: POST /edits (label, unlabel, tag, untag, exclude, include, accept on
item ids), POST /edits/undo, GET /edits (the edit log), and POST /refit (fit the task's head on the current labels
as a background job, followed at GET /jobs/refit-N).

Each write is made by the writer child (edit_writer.py), never by the serving process; the answer comes once it is
committed, with the store generation it made, and by then the server serves a snapshot that holds it. A
--read-only server refuses every write with 403.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from featstore.apps.curate import check_tag, check_text
from featstore.errors import FeatstoreError
from featstore.serve.bodies import _Body, read_json
from featstore.serve.edit_writer import EditWriter, WriterBusy, WriterCrowded, WriterTimeout, refit
from featstore.serve.state import ServerState
from featstore.store.edits import history

MAX_IDS = 100_000
MAX_TEXT = 200
MAX_HISTORY = 1000
KEEP_JOBS = 50             # finished refit jobs remembered
MAX_PENDING_REFITS = 2     # refits queued or running at once; more are refused (429)
READ_ONLY = "this server runs --read-only: edits are refused (start `featstore serve` without --read-only to curate)"


class EditBody(_Body):
    """POST /edits: what to do to which items."""

    action: Literal["label", "unlabel", "tag", "untag", "exclude", "include", "accept"]
    task: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    ids: list[int] = Field(min_length=1, max_length=MAX_IDS)
    label: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    tag: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    reason: str | None = Field(None, min_length=1, max_length=MAX_TEXT)

    def check(self) -> None:
        """The fields each action needs, in one line."""
        needs = {"label": ("task", "label"), "unlabel": ("task",), "tag": ("tag",), "untag": ("tag",)}
        for field in needs.get(self.action, ()):
            if getattr(self, field) is None:
                raise FeatstoreError(f"{field}: action {self.action!r} needs it")
        if any(i < 0 for i in self.ids):
            raise FeatstoreError("ids: item ids are whole numbers >= 0")
        for field, value in (("task", self.task), ("label", self.label), ("reason", self.reason)):
            if value is not None:
                check_text(value, field)
        if self.tag is not None:
            check_tag(self.tag)


class UndoBody(_Body):
    """POST /edits/undo: the edit to undo (default: the newest not undone yet)."""

    edit: int | None = Field(None, ge=1)


class RefitBody(_Body):
    """POST /refit: the task whose head to fit, logreg or every kind (a leaderboard)."""

    task: str = Field(min_length=1, max_length=MAX_TEXT)
    kind: Literal["logreg", "all"] = "logreg"


class Refits:
    """Refit jobs, one running at a time, each in a child process (edit_writer.refit)."""

    def __init__(self, state: ServerState):
        self.state = state
        self.jobs: dict[int, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._one = threading.Lock()

    def start(self, task: str, kind: str) -> dict:
        with self._lock:
            pending = sum(j["state"] in ("queued", "running") for j in self.jobs.values())
        if pending >= MAX_PENDING_REFITS:
            raise HTTPException(429, f"{pending} refits are queued or running already; wait for them to finish")
        job = {"id": f"refit-{next(self._ids)}", "kind": "refit", "task": task, "head_kind": kind,
               "state": "queued", "status": "queued", "queued_at": time.strftime("%Y-%m-%d %H:%M:%S"),
               "result": None, "error": None}
        number = int(job["id"].split("-")[1])
        with self._lock:
            self.jobs[number] = job
            for old in sorted(self.jobs)[:-KEEP_JOBS]:
                del self.jobs[old]
        threading.Thread(target=self._run, args=(job,), daemon=True, name="featstore-refit").start()
        return dict(job)

    def get(self, number: int) -> dict:
        with self._lock:
            if number not in self.jobs:
                raise HTTPException(404, f"no refit job refit-{number}")
            return dict(self.jobs[number])

    def _run(self, job: dict) -> None:
        with self._one:
            self._set(job, "running")
            try:
                result = refit(self.state.root, job["task"], job["head_kind"])
                self._set(job, "done", result=result)
            except FeatstoreError as exc:
                self._set(job, "failed", error=str(exc))
            except Exception as exc:          # the job fails, the server goes on
                self._set(job, "failed", error=f"{type(exc).__name__}: {exc}")

    def _set(self, job: dict, state: str, **fields) -> None:
        with self._lock:
            job.update(fields, state=state, status=state)


def add_edit_routes(app: FastAPI, state: ServerState) -> None:
    """The write routes (add them before GET /jobs/{id}: refit jobs are /jobs/refit-N)."""
    writer = app.state.edit_writer = EditWriter(state.root)
    refits = Refits(state)
    app.router.on_shutdown.append(writer.close)

    def writable() -> None:
        if state.read_only:
            raise HTTPException(403, READ_ONLY)

    async def write(op: str, **args) -> dict:
        """The writer child's result, once committed and served."""
        def run():
            try:
                return writer.request(op, **args)
            except WriterBusy as exc:
                raise HTTPException(409, str(exc)) from None
            except WriterTimeout as exc:
                raise HTTPException(504, str(exc)) from None
            except WriterCrowded as exc:
                raise HTTPException(429, str(exc)) from None

        out = await run_in_threadpool(run)
        if out.get("generation") is not None and state.snapshot.generation < out["generation"]:
            await run_in_threadpool(state.refresh_now)          # the next read sees the edit
        return out | {"served": state.snapshot.generation >= (out.get("generation") or 0)}

    def who(request: Request) -> str:
        return f"web ({request.client.host if request.client else 'unknown client'})"

    @app.post("/edits")
    async def post_edits(request: Request):
        """One edit on items by id: label / unlabel (task, label), tag / untag (tag), exclude (reason) / include,
        accept (each item's suggested label in the task's stored audit). Answers once committed: edit_id (null
        when nothing changed), changed, generation."""
        writable()
        body = EditBody.parse(await read_json(request))
        body.check()
        out = await write("edit", **body.model_dump(), who=who(request))
        return {k: out.get(k) for k in ("edit_id", "changed", "unchanged", "generation", "served", "action", "task")} \
            | ({"skipped": out["skipped"]} if "skipped" in out else {})

    @app.post("/edits/undo")
    async def post_undo(request: Request):
        """Undo an edit (body {"edit": N}, or {} for the newest not undone yet)."""
        writable()
        body = UndoBody.parse(await read_json(request))
        out = await write("undo", edit=body.edit, who=who(request))
        return {"undone": out["undone"], "edit_id": out["edit_id"], "changed": out["changed"],
                "generation": out["generation"], "served": out["served"]}

    @app.get("/edits")
    def get_edits(limit: int = 50):
        """The edit log, newest first."""
        if not 1 <= limit <= MAX_HISTORY:
            raise FeatstoreError(f"limit: 1 to {MAX_HISTORY}")
        with state.reading() as (store, _):
            return {"edits": history(store, limit)}

    @app.post("/refit", status_code=202)
    async def post_refit(request: Request):
        """Fit the task's head (kind logreg, or all: the leaderboard) on the current labels, in the background:
        the job, followed at GET /jobs/{job}; done, its result holds the leaderboard and confusion matrix."""
        writable()
        body = RefitBody.parse(await read_json(request))
        with state.reading() as (store, _):
            if body.task not in store.tasks():
                raise FeatstoreError(f"task: no task {body.task[:60]!r} in this store")
        job = refits.start(body.task, body.kind)
        return JSONResponse({"job": job["id"], **job}, status_code=202)

    @app.get("/jobs/refit-{number}")
    def get_refit(number: int):
        """A refit job: queued, running, done (result: leaderboard, confusion) or failed (error)."""
        return refits.get(number)
