"""Confining a `--where` condition that comes from someone else (over HTTP) to reading the item row it filters.

The condition is spliced into `WHERE (...)` over the item view, so it must be one expression over that row's
columns: no second statement, no way out of its parentheses, no subquery, no statement keyword, no function
that reads files, the network or settings. The connection it runs on is read-only with external access off as
well; this check is what makes the refusal a clear message instead of whatever DuckDB says.
"""
from __future__ import annotations

import re

from featstore.errors import FeatstoreError

MAX_LENGTH = 1000
KEYWORDS = {"select", "from", "with", "union", "intersect", "except", "insert", "update", "delete", "merge",
            "create", "drop", "alter", "truncate", "copy", "attach", "detach", "install", "load", "pragma", "set",
            "reset", "call", "export", "import", "checkpoint", "vacuum", "begin", "commit", "rollback", "grant",
            "use", "describe", "summarize", "show", "explain", "table", "values"}
FUNCTIONS = re.compile(r"^(read_\w*|\w*_scan|glob|getenv|query|query_table|sniff_csv|current_setting|"
                       r"duckdb_\w*|pragma_\w*|which_secret|load_\w*|install_\w*|\w*http\w*|\w*s3\w*)$")
_STRING = re.compile(r"'(?:[^']|'')*'")
_QUOTED_NAME = re.compile(r'"(?:[^"]|"")*"')


def check_where(where: str) -> str:
    """The condition unchanged when it is a plain expression over the item row; else FeatstoreError saying why."""
    if len(where) > MAX_LENGTH:
        raise FeatstoreError(f"where: longer than {MAX_LENGTH} characters")
    bare = _STRING.sub(" 0 ", where)                # string literals may hold anything
    if "'" in bare:
        raise FeatstoreError("where: unterminated string literal")
    if _QUOTED_NAME.search(bare):
        raise FeatstoreError('where: quoted names ("...") are not allowed; use the column names as they are')
    if ";" in bare:
        raise FeatstoreError("where: one condition only (no ';')")
    if "--" in bare or "/*" in bare:
        raise FeatstoreError("where: comments are not allowed")
    depth = 0
    for ch in bare:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise FeatstoreError("where: unbalanced parentheses")
    if depth:
        raise FeatstoreError("where: unbalanced parentheses")
    for word in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", bare):
        if word.lower() in KEYWORDS:
            raise FeatstoreError(f"where: {word!r} is not allowed; give a condition on the item's columns "
                                 "(item_id, path, hash, size, mtime, width, height, updated_at, label, split, text)")
    for name in re.findall(r"([A-Za-z_][A-Za-z_0-9]*)\s*\(", bare):
        if FUNCTIONS.match(name.lower()):
            raise FeatstoreError(f"where: function {name!r} is not allowed (it reads outside the item row)")
    return where
