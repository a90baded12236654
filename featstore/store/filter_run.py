"""Where a checked `--where` condition runs: a DuckDB connection of its own over the store's file (read-only, external
access off, extensions neither loaded nor installed, a memory limit, one thread, the configuration locked), and a
time limit that interrupts the query. A few filters at most run at once, so that costly ones leave cores to
everything else a server answers meanwhile.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb

from featstore.errors import FeatstoreError
from featstore.store.where_guard import ItemFilter

TIME_LIMIT_S = 10.0        # a filter still running then is interrupted
MEMORY_LIMIT = "1GB"       # DuckDB's memory limit on a filter's connection
_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))     # filters running at once


class FilterTimeout(FeatstoreError):
    """A filter that ran past the time limit (HTTP 408)."""


def filter_connection(db: Path) -> duckdb.DuckDBPyConnection:
    """A connection for filters only, over the DuckDB file `db` attached read-only."""
    con = duckdb.connect(":memory:", config={"memory_limit": MEMORY_LIMIT, "threads": 1,
                                             "autoload_known_extensions": False,
                                             "autoinstall_known_extensions": False})
    try:
        quoted = str(db).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS store (READ_ONLY)")
        con.execute("USE store")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def filter_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of a filter connection (one per thread or request) reading the attached store."""
    cur = con.cursor()
    cur.execute("USE store")
    return cur


def run_filter(con: duckdb.DuckDBPyConnection, where: ItemFilter, sql: str, params, fetch=None,
               seconds: float | None = None):
    """`fetch(con.execute(sql, params))` (default: fetchall) within the time limit; an error naming the condition
    when it fails, runs too long (`seconds`, default TIME_LIMIT_S) or needs too much memory."""
    seconds = TIME_LIMIT_S if seconds is None else seconds
    if not _SLOTS.acquire(timeout=seconds):
        raise FilterTimeout(f"where {where.text!r}: other filters kept every filter slot busy for {seconds:g} s; "
                            "try again")
    timer = threading.Timer(seconds, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cur = con.execute(sql, params)
        return fetch(cur) if fetch else cur.fetchall()
    except duckdb.InterruptException:
        raise FilterTimeout(f"where {where.text!r}: stopped after {seconds:g} s, the time limit of a filter; "
                            "narrow the condition") from None
    except duckdb.OutOfMemoryException:
        raise FeatstoreError(f"where {where.text!r}: needs more than {MEMORY_LIMIT} of memory, the limit of a "
                             "filter; narrow the condition") from None
    except duckdb.Error as exc:
        raise FeatstoreError(f"where {where.text!r}: {str(exc).splitlines()[0]}") from None
    finally:
        timer.cancel()
        _SLOTS.release()
