"""The user's own item metadata: typed columns read from a table keyed by path (CSV, TSV, Parquet, JSONL), as
DuckDB infers them (integer, number, boolean, date, timestamp, time, text), kept in the store's item_meta table
(one column each, added as new ones come) and joined into the item view, so `--where` filters on them and search
results and frames show them.

A column keeps the type it was first stored with: a file that holds another type of value in it is refused. Names
are plain lower-case identifiers that are neither an item column nor an SQL keyword.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import duckdb

from featstore.errors import FeatstoreError
from featstore.paths import display_path
from featstore.store.where_guard import COLUMNS, META_NAME, RESERVED
from featstore.uri import is_uri

TYPE_NAMES = {"BIGINT": "integer", "DOUBLE": "number", "BOOLEAN": "boolean", "DATE": "date",
              "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamp with time zone", "TIME": "time",
              "VARCHAR": "text"}
_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
_TEMP = "_meta_in"
_keywords: frozenset | None = None


def quote(name: str) -> str:
    """A checked column name as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def stored_type(duck_type: str) -> str:
    """The type a column is stored as, for a type DuckDB inferred (integers as BIGINT, numbers as DOUBLE, ...)."""
    t = duck_type.upper()
    if t in _INTEGERS:
        return "BIGINT"
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return "DOUBLE"
    if t in ("TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"):
        return "TIMESTAMP"
    if t == "TIMESTAMPTZ":
        return "TIMESTAMP WITH TIME ZONE"
    return t if t in TYPE_NAMES else "VARCHAR"


def json_value(value):
    """A metadata value as JSON can carry it: dates and times as ISO text."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def table_reader(p: Path) -> str:
    """The DuckDB table function reading a CSV, TSV, Parquet or JSON(L) file."""
    q = str(p).replace("'", "''")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return f"read_parquet('{q}')"
    if suffix in (".jsonl", ".ndjson"):
        return f"read_json('{q}', format = 'newline_delimited')"
    if suffix == ".json":
        return f"read_json('{q}')"
    delim = ", delim = '\t'" if suffix == ".tsv" else ""
    return f"read_csv('{q}', header = true{delim})"


def read_columns(con: duckdb.DuckDBPyConnection, path: str | Path, skip=("path",)) -> dict[str, tuple[str, str]]:
    """A table's metadata columns: lower-case name -> (its name in the file, stored type), each name checked;
    the table must have a `path` column."""
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {table_reader(Path(path))}").fetchall()
    except duckdb.Error as exc:
        raise FeatstoreError(f"{path}: cannot read table ({str(exc).splitlines()[0]})") from None
    names = [r[0].strip().lower() for r in described]
    if "path" not in names:
        raise FeatstoreError(f"{path}: needs a header with a 'path' column (found: {', '.join(names)})")
    out = {}
    for (name, dtype, *_), low in zip(described, names):
        if low in skip:
            continue
        check_name(low, name, path)
        if low in out:
            raise FeatstoreError(f"{path}: column {name!r} appears twice (names are compared in lower case)")
        out[low] = (name, stored_type(dtype))
    return out


def check_name(name: str, given: str, path) -> None:
    """One error naming the column unless `name` can be a metadata column."""
    if not META_NAME.fullmatch(name):
        raise FeatstoreError(f"{path}: column {given!r} is not a usable metadata name: lower-case letters, digits "
                             "and _, not starting with a digit, at most 63 characters")
    if name in RESERVED:
        hint = " (labels go in with `featstore label --csv`)" if name == "label" else ""
        what = "an item column" if name in COLUMNS else "a name featstore uses"
        raise FeatstoreError(f"{path}: column {given!r} clashes with {what}; rename it{hint}")
    if name in _reserved_words():
        raise FeatstoreError(f"{path}: column {given!r} is an SQL keyword; rename it")


def _reserved_words() -> frozenset:
    global _keywords
    if _keywords is None:
        with duckdb.connect() as con:
            _keywords = frozenset(r[0] for r in con.execute(
                "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall())
    return _keywords


def attach(store, path: str | Path, key_of, skip=("path",)) -> dict:
    """Store the metadata columns of the table at `path` for the rows whose path `key_of(raw)` maps to a stored
    path (None: not in the store, reported). Returns what was done: rows, matched, columns, new, unmatched."""
    con = store.con
    columns = read_columns(con, path, skip)
    existing = store.metadata_columns()
    casts = ", ".join(f"CAST({quote(src)} AS {t}) AS {quote(c)}" for c, (src, t) in columns.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_TEMP} AS SELECT row_number() OVER () AS _row, "
                f"CAST({quote(_source_path(con, path))} AS VARCHAR) AS _raw{', ' + casts if casts else ''} "
                f"FROM {table_reader(Path(path))}")
    try:
        types = {c: _kept_type(con, c, t, existing.get(c), path) for c, (_, t) in columns.items()}
        rows, unmatched = _keys(con, key_of)
        with store.transaction():
            for c, t in types.items():
                if c not in existing:
                    con.execute(f"ALTER TABLE item_meta ADD COLUMN {quote(c)} {t}")
            if types and rows:
                _upsert(con, list(types), rows)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_TEMP}")
    return {"file": str(path), "rows": len(rows) + len(unmatched), "matched_paths": len(set(rows.values())),
            "columns": {c: TYPE_NAMES[t] for c, t in types.items()}, "new_columns": [c for c in types
                                                                                     if c not in existing],
            "unmatched": unmatched}


def _source_path(con, path) -> str:
    """The file's own spelling of its `path` column."""
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {table_reader(Path(path))}").fetchall()]
    return next(n for n in names if n.strip().lower() == "path")


def _kept_type(con, column: str, new: str, old: str | None, path) -> str:
    """The type a column is written as: its stored one; another is refused unless the file's column is empty."""
    if old is None or stored_type(old) == new:
        return new if old is None else stored_type(old)
    if con.execute(f"SELECT count({quote(column)}) FROM {_TEMP}").fetchone()[0]:
        raise FeatstoreError(f"{path}: column {column!r} is stored as {TYPE_NAMES[stored_type(old)]}, but this "
                             f"file holds {TYPE_NAMES[new]} values in it; a column keeps one type (convert the "
                             "values, or use a new column name)")
    return stored_type(old)


def _keys(con, key_of) -> tuple[dict[int, str], list[dict]]:
    """(row number -> stored path, for the rows that match one; the rows that match none, with why)."""
    rows, unmatched = {}, []
    for row, raw in con.execute(f"SELECT _row, _raw FROM {_TEMP} ORDER BY _row").fetchall():
        key = key_of(raw) if raw else None
        if key is None:
            unmatched.append({"row": row, "path": raw, "reason": "not in the store" if raw else "empty path"})
        else:
            rows[row] = key
    return rows, unmatched


def _upsert(con, columns: list[str], rows: dict[int, str]) -> None:
    """Write the matched rows' columns into item_meta (the last row for a path wins; other columns are kept)."""
    cols = ", ".join(quote(c) for c in columns)
    picked = ", ".join(f"m.{quote(c)}" for c in columns)
    con.execute(f"""INSERT INTO item_meta (path, {cols}) SELECT key, {cols} FROM (
                      SELECT k.key, {picked} FROM {_TEMP} m
                      JOIN (SELECT unnest($1::BIGINT[]) AS _row, unnest($2::VARCHAR[]) AS key) k ON k._row = m._row
                      QUALIFY row_number() OVER (PARTITION BY k.key ORDER BY m._row DESC) = 1)
                    ON CONFLICT (path) DO UPDATE SET """ + ", ".join(f"{quote(c)} = excluded.{quote(c)}"
                                                                     for c in columns),
                [list(rows), list(rows.values())])


def meta_from_csv(store, csv_path: str | Path) -> dict:
    """Metadata for items already stored, from a table with a `path` column (relative paths tried against its
    folder, then the current directory, as for labels). Rows that match nothing are reported, not stored."""
    csv_path = Path(csv_path)
    items = store.items_by_path()
    return attach(store, csv_path, lambda raw: next(iter(match_path(raw, csv_path.parent, items)), None))


def match_path(value: str, csv_dir: Path, items: dict) -> list[str]:
    """The stored path a row's path names ([] if none): an absolute path, else tried against the CSV's folder,
    then the current directory; a URL as it is."""
    if is_uri(value):
        return [value] if value in items else []
    candidates = [value] if os.path.isabs(value) else [str(csv_dir / value), value]
    for c in candidates:
        key = display_path(os.path.abspath(c))
        if key in items:
            return [key]
    return []
