"""The web app's read routes for the gallery and the item page: GET /grid (a page of the items a view matches,
with counts per filter value), GET /grid/ids (every matching id, for "select all matching") and
GET /items/{id}/view (predictions of every head, audit findings, exact copies, tags)."""
from __future__ import annotations

import threading

from fastapi import FastAPI, Request

from featstore.apps.grid import grid_ids, grid_page, parse_view, warm
from featstore.apps.item_view import item_view
from featstore.apps.map2d import map_points
from featstore.errors import FeatstoreError
from featstore.serve.state import ServerState

MAX_QUERY = 32_768         # characters of a query string


def add_grid_routes(app: FastAPI, state: ServerState) -> None:
    def warm_heads():
        try:
            with state.reading() as (store, snap):
                warm(store, snap.memo, state.root)
        except Exception:       # a store without heads' sets, a snapshot closed meanwhile: the first request computes
            pass

    app.router.on_startup.append(
        lambda: threading.Thread(target=warm_heads, name="featstore-grid-warm", daemon=True).start())

    def view_of(request: Request, store, memo: dict):
        query = request.url.query
        if len(query) > MAX_QUERY:
            raise FeatstoreError(f"the query string is over {MAX_QUERY} characters")
        from featstore.heads.storage import head_names

        pairs = [(k, v) for k, v in request.query_params.multi_items() if k != "counts"]
        names = memo.get(("grid", "head_names"))
        if names is None:
            names = memo[("grid", "head_names")] = head_names(store)
        return parse_view(pairs, store.metadata_columns(), sorted(store.tasks()), names)

    def region_of(store, snap):
        def points(set_id: str, method: str):
            s = store.pick_set(set_id)
            p = map_points(store, s, state.maps, snap.generation, method)
            return p["item_id"], p["xy"]
        return points

    @app.get("/grid")
    def get_grid(request: Request):
        """A page of the items the view matches (query parameters: task, label, split, status, head, pred,
        correct, conf_min, conf_max, finding, dup_group, tag, m.COLUMN, where, region + region_set +
        region_method, sort, offset, limit <= 500; repeat a parameter for several values), with per-filter counts
        (`counts=false` leaves them out)."""
        with state.reading() as (store, snap):
            want_counts = request.query_params.get("counts", "true") != "false"
            view = view_of(request, store, snap.memo)
            out = grid_page(store, snap.memo, state.root, view, region_of(store, snap), counts=want_counts)
        return out | {"generation": snap.generation, "read_only": state.read_only}

    @app.get("/grid/ids")
    def get_grid_ids(request: Request):
        """Every item id the view matches (at most 100,000), for "select all matching"."""
        with state.reading() as (store, snap):
            view = view_of(request, store, snap.memo)
            return {"ids": grid_ids(store, snap.memo, state.root, view, region_of(store, snap))}

    @app.get("/items/{item_id}/view")
    def get_item_view(item_id: int, task: str | None = None):
        """What the item page shows beyond GET /items/{id}: every head's top predictions, the audit findings of
        `task` that name the item, its exact copies, tags and exclusion."""
        with state.reading() as (store, snap):
            if task is not None and task not in store.tasks():
                raise FeatstoreError(f"task: no task {task[:60]!r} in this store")
            return item_view(store, snap.memo, state.root, item_id, task)
