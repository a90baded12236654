"""Manifest: a CSV or Parquet table listing image files (a `path` column, optionally `label`) as a source.

Relative paths are relative to the manifest's folder. Rows become the same SourceFile records a folder listing
gives (sorted by path, duplicates dropped); a path that cannot be stat-ed is recorded as failed, like a file that
vanished. A row may also name an fsspec URL (s3://, gs://, file://, ...): it is stat-ed and read through fsspec
(uri.py), so those workers need fsspec and the scheme's backend. Every other column is the items' own metadata,
stored with the types DuckDB reads in it (store/metadata.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.embed.source import SourceFile, _entry
from featstore.paths import display_path
from featstore.store import metadata
from featstore.uri import is_uri, stat

MANIFEST_SUFFIXES = {".csv", ".tsv", ".parquet"}


def columns(path: str | Path) -> list[str]:
    import duckdb

    try:
        return [r[0] for r in duckdb.connect().execute(f"DESCRIBE SELECT * FROM {_reader(Path(path))}").fetchall()]
    except duckdb.Error as exc:
        raise FeatstoreError(f"{path}: cannot read table ({str(exc).splitlines()[0]})") from None


def is_image_manifest(path: str | Path, text_column: str = "text") -> bool:
    """A table with a `path` column and no text column: a list of image files, not texts to embed."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in MANIFEST_SUFFIXES:
        return False
    try:
        cols = columns(p) if p.suffix.lower() == ".parquet" else _header(p)
    except (FeatstoreError, OSError, UnicodeDecodeError):
        return False                     # not readable as a manifest: the text reader will say why
    return "path" in cols and text_column not in cols


def _header(p: Path) -> list[str]:
    import csv

    with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return next(csv.reader(f, delimiter="\t" if p.suffix.lower() == ".tsv" else ","), [])


def read_manifest(path: str | Path) -> list[SourceFile]:
    import duckdb

    p = Path(path)
    cols = columns(p)
    label = "label" if "label" in cols else "NULL"
    rows = duckdb.connect().execute(f"SELECT CAST(path AS VARCHAR), CAST({label} AS VARCHAR) FROM {_reader(p)} "
                                    "WHERE path IS NOT NULL").fetchall()
    files, seen = [], set()
    for raw, lab in rows:
        if is_uri(raw):
            f = _uri_entry(raw, lab)
        else:
            f = _entry(raw if os.path.isabs(raw) else os.path.join(p.parent, raw), lab)
        if f.key not in seen:
            seen.add(f.key)
            files.append(f if f.error is None else SourceFile(f.path, f.key, lab, None, None, f.error))
    files.sort(key=lambda f: f.key)
    return files


def metadata_columns(path: str | Path) -> dict[str, tuple[str, str]]:
    """The manifest's metadata columns (all but path and label), names checked before any store is touched."""
    import duckdb

    with duckdb.connect() as con:
        return metadata.read_columns(con, path, skip=("path", "label"))


def attach_metadata(store, path: str | Path) -> dict | None:
    """Store the manifest's metadata columns for its rows' items (by the paths its rows name), or None if it has
    none."""
    if not metadata_columns(path):
        return None
    folder = Path(path).parent
    return metadata.attach(store, path, lambda raw: raw if is_uri(raw) else display_path(
        os.path.abspath(raw if os.path.isabs(raw) else os.path.join(folder, raw))), skip=("path", "label"))


def _uri_entry(url: str, label: str | None) -> SourceFile:
    try:
        size, mtime = stat(url)
    except FeatstoreError:
        raise
    except Exception as exc:      # noqa: BLE001  (fsspec backends raise their own kinds: a row failure, not a crash)
        return SourceFile(url, url, label, None, None, f"cannot stat URL: {str(exc) or type(exc).__name__}")
    return SourceFile(url, url, label, size, mtime)


def _reader(p: Path) -> str:
    q = str(p).replace("'", "''")
    if p.suffix.lower() == ".parquet":
        return f"read_parquet('{q}')"
    delim = ", delim = '\t'" if p.suffix.lower() == ".tsv" else ""
    return f"read_csv('{q}', header = true{delim})"
