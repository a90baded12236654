"""The web app and REST API over one store: FastAPI routes that call featstore's search, predict and reading
functions on the current snapshot (see state.py). Every error is JSON with a message, never a stack trace."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import duckdb
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from featstore.apps.confusion import confusion_cells
from featstore.apps.map2d import colouring, map_points
from featstore.apps.predict import predict_unstored
from featstore.apps.stats import stats
from featstore.apps.thumbnails import SIZES, thumbnail
from featstore.errors import FeatstoreError
from featstore.search.query import Query, search_many
from featstore.home import home_dir
from featstore.serve.bodies import PredictBody, SearchBody, read_json
from featstore.serve.edit_routes import add_edit_routes
from featstore.serve.grid_routes import add_grid_routes
from featstore.serve.guard import LOOPBACK, RequestGuard, for_the_page
from featstore.serve.state import ServerState
from featstore.serve.uploads import MAX_FILES, UploadError, save_upload
from featstore.store.filter_run import FilterTimeout
from featstore.store.labels import shown_task
from featstore.store.where_guard import check_where

STATIC = Path(__file__).parent / "static"
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_PAGE = 500


def create_app(state: ServerState, hosts: set[str] = LOOPBACK) -> FastAPI:
    """The app serving `state`'s store (the caller closes `state` when the app stops), answering requests
    addressed to one of `hosts` (see guard.py)."""
    app = FastAPI(title="featstore", summary="Search, predict and browse a featstore store.")
    app.state.featstore = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _errors(app, state)
    add_edit_routes(app, state)        # curation writes; first: GET /jobs/refit-N before GET /jobs/{id}

    app.add_middleware(_LimitBody)
    app.add_middleware(RequestGuard, hosts=set(hosts))       # added last: runs first

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/stats")
    def get_stats():
        """What the store holds (as `featstore stats --json`), and which generation is served."""
        with state.reading() as (store, snap):
            out = stats(store)
        return out | {"store": str(state.root), "served_generation": snap.generation,
                      "snapshot_taken_at": snap.taken_at, "newer_pending": state.pending}

    @app.get("/heads")
    def get_heads():
        """The stored heads."""
        with state.reading() as (store, _):
            return stats(store)["heads"]

    @app.get("/items")
    def get_items(where: str | None = None, task: str | None = None, offset: int = 0, limit: int = 50):
        """Stored items (ok status) passing `where` (SQL over item_id, path, hash, size, mtime, width, height,
        updated_at, label, split, text and the store's metadata columns), a page at a time by item_id."""
        if not (0 <= offset and 1 <= limit <= MAX_PAGE):
            raise FeatstoreError(f"offset >= 0 and 1 <= limit <= {MAX_PAGE}")
        with state.reading() as (store, _):
            where = check_where(where, store.metadata_columns()) if where else None
            task = shown_task(store, task, where)       # several tasks, none asked for: labels only if where reads them
            total, rows = store.page_items(task, where, offset, limit)
        return {"task": task, "where": where and where.text, "total": total, "offset": offset, "limit": limit,
                "items": [_item_json(r) for r in rows]}

    @app.get("/items/{item_id}")
    def get_item(item_id: int):
        """One item: its record, every task's label, where its thumbnail is, and its metadata (if the store has
        metadata columns)."""
        with state.reading() as (store, _):
            item = _item(store, item_id)
            extra = store.con.execute("SELECT width, height, updated_at FROM items WHERE item_id = ?",
                                      [item_id]).fetchone()
            labels = store.labels_of(item.path)
            meta = store.meta_by_path([item.path])
        return {"item_id": item.item_id, "path": item.path, "hash": item.hash, "size": item.size,
                "mtime": item.mtime, "status": item.status, "error": item.error, "width": extra[0],
                "height": extra[1], "updated_at": str(extra[2]), "labels": labels,
                "thumbnail": f"/items/{item.item_id}/thumbnail" if item.status == "ok" else None} | (
            {"meta": meta[item.path]} if meta else {})

    @app.get("/items/{item_id}/thumbnail")
    def get_thumbnail(item_id: int, request: Request, size: int = 256):
        """The item's image scaled to `size` (128, 256 or 512) on its longer side, JPEG, cached."""
        if size not in SIZES:
            raise FeatstoreError(f"size: one of {', '.join(map(str, SIZES))}")
        with state.reading() as (store, _):
            item = _item(store, item_id)
        if item.status != "ok" or not item.hash:
            raise HTTPException(404, f"item {item_id} has no image")
        etag = f'"{item.hash}-{size}"'
        headers = {"Cache-Control": "public, max-age=86400", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return FileResponse(thumbnail(state.thumbs, item.path, item.hash, size), media_type="image/jpeg",
                            headers=headers)

    @app.post("/search")
    async def post_search(request: Request):
        """Nearest stored items: multipart with `file` (an image; fields k, where, model, task), or JSON
        {text | id | vector, k, where, model, task} (a vector: in the set `model`, else the newest of its
        dimension). An uploaded file is embedded for this query only, unless the form
        says add=true: then it is also added to the store (the answer's "added" is the job, see POST /items)."""
        if _is_multipart(request):
            async with _multipart(request, 1, "multipart search: give the image as field 'file'") as (fields, saved):
                added = await added_if_asked(fields, saved)
                (name, path), = saved
                out = await search(SearchBody.from_form(fields), Query("file", path)) | {"query": name}
                return JSONResponse(out | ({"added": added} if added is not None else {}))
        body = SearchBody.parse(await read_json(request))
        given = body.query_given()
        query = Query(given, getattr(body, given))           # kinds: "text", "id", "vector"
        return JSONResponse(await search(body, query))      # plain JSON types already: no jsonable_encoder pass

    def checked_where(where: str):
        """The condition checked before anything runs, against the served store's metadata columns too."""
        with state.reading() as (store, _):
            return check_where(where, store.metadata_columns())

    async def search(body: SearchBody, query: Query) -> dict:
        where = checked_where(body.where) if body.where else None

        def run():
            with state.reading() as (store, snap):
                return search_many(store, [query], k=body.k, model=body.model or None, task=body.task or None,
                                   where=where, backbones=state.backbones, indexes=snap.indexes)[0]

        return await run_in_threadpool(run)         # off the event loop: requests run side by side

    @app.post("/predict")
    async def post_predict(request: Request):
        """A stored head on uploaded images (multipart: `head`, one or more `file`) or texts (JSON {head, texts});
        nothing is added to the store unless the form says add=true (as for POST /search)."""
        if _is_multipart(request):
            async with _multipart(request, MAX_FILES, "multipart predict: give the images as field 'file'") as (
                    fields, saved):
                head = _head_name(fields)
                added = await added_if_asked(fields, saved)
                out = await predict(head, files=saved, texts=[])
                return out | ({"added": added} if added is not None else {})
        body = PredictBody.parse(await read_json(request))
        return await predict(body.head, files=[], texts=body.texts)

    async def predict(head: str, files: list, texts: list) -> dict:
        def run():
            with state.reading() as (store, _):
                return predict_unstored(store, head, files=files, texts=texts, backbones=state.backbones)

        return await run_in_threadpool(run)

    def add(fields: dict, saved: list[tuple[str, str]]) -> dict:
        """Keep the uploads and queue their embedding with the set `model` names (default: the newest image
        set): the job."""
        if state.read_only:
            raise HTTPException(403, "this server runs --read-only: nothing is added to the store")
        with state.reading() as (store, _):
            s = store.pick_set(fields.get("model") or None, modality="image")
        return state.adds.add(saved, s.model, s.precision)

    async def added_if_asked(fields: dict, saved: list[tuple[str, str]]) -> dict | None:
        """With form field add=true, the add job (see add), else None."""
        if str(fields.get("add", "")).lower() not in ("1", "true", "yes", "on"):
            return None
        return await run_in_threadpool(add, fields, saved)

    @app.post("/items", status_code=202)
    async def post_items(request: Request):
        """Add uploaded images to the store (multipart: one or more `file`, optional `model`): they are kept
        under the store's uploads/ folder and embedded in the background; GET /jobs/{id} follows the job, and the
        items are served from the next snapshot on."""
        if not _is_multipart(request):
            raise FeatstoreError("add images as multipart field 'file'")
        async with _multipart(request, MAX_FILES, "give the images as field 'file'") as (fields, saved):
            return await run_in_threadpool(add, fields, saved)

    @app.get("/jobs/{job_id}")
    def get_job(job_id: int):
        """An add job: queued, running, done (with what the embed did) or failed (with why)."""
        try:
            return state.adds.job(job_id)
        except FeatstoreError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/map")
    def get_map(model: str | None = None, task: str | None = None, color: str = "label", method: str = "tsne"):
        """A 2-D map of an embedding set (method tsne: PCA + t-SNE, or pca; computed on first request and stored):
        item ids, x and y in [0, 1], and a colour code per point (the label of `task`, or with color=head:NAME
        that head's prediction); a numeric task gives a value per point and the range instead (map2d.colouring).
        Several tasks and none named: no colours, as the CLI's task rule."""
        with state.reading() as (store, snap):
            s = store.pick_set(model)
            points = map_points(store, s, state.maps, snap.generation, method)
            ids = points["item_id"].tolist()
            if color.startswith("head:"):
                classes, names = _head_colours(store, s, color[5:], ids)
            elif color == "label":
                task = shown_task(store, task)         # several tasks, none chosen: no colours (as the CLI)
                labels = dict(store.con.execute(f"SELECT item_id, label FROM ({store.item_view()}) AS item "
                                                "WHERE label IS NOT NULL", {"task": task}).fetchall()) if task else {}
                names = [labels.get(i) for i in ids]
                classes = sorted({n for n in names if n is not None})
            else:
                raise FeatstoreError("color: 'label' or 'head:NAME'")
        xy = points["xy"]
        return {"set_id": s.set_id, "model": s.model, "method": method, "n": len(ids), "color": color,
                "task": task if color == "label" else None,
                "ids": ids, "x": [round(v, 4) for v in xy[:, 0].tolist()], "y": [round(v, 4) for v in xy[:, 1].tolist()]
                } | colouring(names, classes)

    @app.get("/heads/{name}/confusion")
    def get_confusion(name: str):
        """The head's confusion matrix on its task's held-out split, with the item ids in each cell."""
        with state.reading() as (store, _):
            return confusion_cells(store, name)

    add_grid_routes(app, state)
    return app


class _LimitBody:
    """Refuses a request that declares a body over MAX_REQUEST_BYTES (413) before any of it is read. Plain ASGI,
    not an `http` middleware function: that wraps every request and response in streams, a cost on each call."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
            if size.isdigit() and int(size) > MAX_REQUEST_BYTES:
                response = _error(413, f"request over {MAX_REQUEST_BYTES // (1024 * 1024)} MB")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


@contextlib.asynccontextmanager
async def _multipart(request: Request, max_files: int, no_file: str):
    """(the form's text fields, its files as [(client name, local path)]) for the life of the block: the files
    are read within the upload limits into a private folder, removed afterwards. No file as field 'file': the
    error `no_file`."""
    work, form = tempfile.mkdtemp(prefix="featstore-upload-"), None
    try:
        form = await request.form(max_files=max_files, max_fields=10)
        uploads = [v for v in form.getlist("file") if not isinstance(v, str)]
        if not uploads:
            raise FeatstoreError(no_file)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        saved = [await run_in_threadpool(save_upload, u, work) for u in uploads]
        try:
            yield fields, saved
        except FeatstoreError as exc:           # name an upload as its client did, not by its private copy
            message = str(exc)
            for name, path in saved:
                message = message.replace(path, name)
            raise type(exc)(message) if type(exc) is not UploadError else exc from None
    finally:
        if form is not None:
            await form.close()
        shutil.rmtree(work, ignore_errors=True)


def _head_name(fields: dict) -> str:
    head = fields.get("head")
    if not isinstance(head, str) or not head:
        raise FeatstoreError("give the head's name as 'head'")
    return head


def _head_colours(store, s, head_name: str, ids: list[int]):
    import numpy as np

    from featstore.heads.storage import load_head
    from featstore.heads.stored_run import outputs_for

    head, record = load_head(store, head_name)
    if record["set_id"] != s.set_id or head.task_type != "classification":
        raise FeatstoreError(f"head {head_name!r}: a classification head of this embedding set ({s.model})")
    rows = store.con.execute(f"SELECT i.item_id, i.hash, e.vector FROM items i JOIN {s.table} e ON e.hash = i.hash "
                             "WHERE i.item_id IN (SELECT unnest($1::BIGINT[]))", [ids]).fetchnumpy()
    vectors = np.asarray(list(rows["vector"]), np.float32).reshape(len(rows["item_id"]), s.dim)
    out = outputs_for(store, head, record, list(rows["hash"]), vectors)
    predicted = dict(zip(rows["item_id"].tolist(), np.asarray(head.outputs)[out.argmax(axis=1)]))
    return list(head.outputs), [predicted.get(i) for i in ids]


def _item(store, item_id: int):
    try:
        return store.item(item_id)
    except FeatstoreError as exc:
        raise HTTPException(404, str(exc).replace(f" in {store.root}", "")) from None


def _item_json(row: dict) -> dict:
    return {k: (str(v) if k == "updated_at" else v) for k, v in row.items()} | {
        "thumbnail": f"/items/{row['item_id']}/thumbnail" if row.get("text") is None else None}


def _int(value, name: str) -> int:
    """A whole number from a form field (text)."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 20:
        return int(value)
    raise FeatstoreError(f"{name}: expected a whole number, got {str(value)[:40]!r}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI, state: ServerState) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return _error(status, for_the_page(message, state.root, state.work, (home_dir(),)))

    @app.exception_handler(UploadError)
    async def upload_error(_request, exc: UploadError):
        return error(exc.status, str(exc))

    @app.exception_handler(FeatstoreError)
    async def featstore_error(_request, exc: FeatstoreError):
        status = 408 if isinstance(exc, FilterTimeout) else 404 if str(exc).startswith("no item with id") else 400
        return error(status, str(exc))

    @app.exception_handler(duckdb.Error)
    async def sql_error(_request, exc: duckdb.Error):
        return error(400, f"where: {str(exc).splitlines()[0]}")

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body"))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")
