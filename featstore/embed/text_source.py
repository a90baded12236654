"""Text sources: a CSV/TSV, Parquet or JSON Lines file (one text per row), or a folder of .txt files in class
subfolders. Each text becomes a record with a stable key; a row that cannot be used (empty text, undecodable
bytes, broken JSON) is a record with an error, and the rest goes on."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from featstore.embed.decode import max_file_bytes
from featstore.errors import FeatstoreError
from featstore.embed.source import scan_folder
from featstore.paths import display_path

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")


@dataclass
class TextRecord:
    key: str                  # the file's absolute path, or "<file>#<row id>" for a row of a table
    text: str | None
    label: str | None
    size: int | None          # UTF-8 bytes of the text
    mtime: float | None       # the source file's mtime
    error: str | None = None


def is_text_source(path: str | Path) -> bool:
    """A table file, or a folder with .txt files in (class) subfolders and no images."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in TABLE_SUFFIXES or path.suffix.lower() == ".txt"
    if path.is_dir():
        return any(f.label for f in scan_folder(path, _is_txt)[0]) and not scan_folder(path)[0]
    return False


def read_text_source(path: str | Path, text_column: str = "text", label_column: str | None = None,
                     id_column: str | None = None) -> tuple[list[TextRecord], list[str]]:
    """(records, warnings) from any supported text source. label_column None: a table's `label` column, if any."""
    path = Path(path)
    if path.is_dir():
        files, warnings = scan_folder(path, _is_txt)
        return [_txt_record(f.path, f.key, f.label, f.mtime, f.error) for f in files], warnings
    suffix = path.suffix.lower()
    key = display_path(os.path.abspath(path))
    mtime = path.stat().st_mtime
    if suffix == ".txt":
        return [_txt_record(str(path), key, None, mtime, None)], []
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, text_column)
    else:
        raise FeatstoreError(f"{path}: not a text source (use a folder of .txt files, or {', '.join(TABLE_SUFFIXES)})")
    return _records(path, key, mtime, rows, text_column, label_column, id_column), []


def text_scope(path: str | Path, records: list[TextRecord]):
    """What a text source covers (vanished.py): a folder's .txt files, a table's rows; a lone .txt file, nothing."""
    from featstore.store.vanished import folder_scope, table_scope

    keys, path = [r.key for r in records], Path(path)
    if path.is_dir():
        return folder_scope(str(path), keys, _is_txt)
    return table_scope(str(path), keys) if path.suffix.lower() in TABLE_SUFFIXES else None


def _is_txt(name: str) -> bool:
    return name.lower().endswith(".txt")


def _txt_record(fs_path: str, key: str, label, mtime, error) -> TextRecord:
    if error:
        return TextRecord(key, None, label, None, mtime, error)
    try:
        with open(fs_path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return TextRecord(key, None, label, None, mtime, f"cannot read file: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return TextRecord(key, None, label, len(data), mtime,
                          f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    return _checked(TextRecord(key, text, label, len(data), mtime))


def _checked(r: TextRecord) -> TextRecord:
    if r.error is None and (r.text is None or not r.text.strip()):
        r.error, r.text = "empty text", None
    return r


def _csv_rows(path: Path, delimiter: str):
    """Rows as dicts; undecodable bytes survive as surrogates so that only their row fails. A cell may be as long as
    a file featstore reads (csv's default limit, 128 KB, would fail the whole table over one long text). A quote
    left open runs to the end of the file: that last row fails, naming the line where the quote opens."""
    csv.field_size_limit(max_file_bytes())
    ended = []

    def lines(fh):
        yield from fh
        ended.append(True)          # a row read from here on was ended by the end of the file: an open quote

    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            reader = csv.reader(lines(fh), delimiter=delimiter)
            table = [(fields, reader.line_num, bool(ended)) for fields in reader if fields]
    except (OSError, csv.Error) as exc:
        raise FeatstoreError(f"{path}: cannot read CSV ({exc})") from None
    if not table:
        return [], []
    (columns, line, open_quote), *body = table
    if open_quote:
        raise FeatstoreError(f"{path}: line {_quote_line(columns, line)}: unclosed quote in the header")
    rows = []
    for i, (fields, line, open_quote) in enumerate(body, start=1):
        if open_quote:
            rows.append((i, {}, f"line {_quote_line(fields, line)}: unclosed quote (it runs to the end of the file, "
                                "so no row after it was read)"))
        else:
            rows.append((i, dict(zip(columns, fields)), None))
    return columns, rows


def _quote_line(fields: list[str], last_line: int) -> int:
    """The line where a row's open quote starts: its last field holds everything after that quote."""
    return last_line - fields[-1].count("\n") + fields[-1].endswith("\n")


def _jsonl_rows(path: Path, text_column: str):
    """Rows as dicts; a line that is not a JSON object, or has no `text_column` key, is a row with an error."""
    columns, rows = set(), []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise FeatstoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except UnicodeDecodeError as exc:
            rows.append((i, {}, f"line {i}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"))
            continue
        except ValueError as exc:
            rows.append((i, {}, f"line {i}: invalid JSON ({str(exc).splitlines()[0]})"))
            continue
        columns.update(obj)
        error = None if text_column in obj else f"line {i}: no {text_column!r} key"
        rows.append((i, {k: None if v is None else str(v) for k, v in obj.items()}, error))
    return sorted(columns), rows


def _parquet_rows(path: Path):
    import duckdb

    try:
        rel = duckdb.sql("SELECT * FROM read_parquet(?)", params=[str(path)])
        columns = rel.columns
        data = rel.fetchall()
    except duckdb.Error as exc:
        raise FeatstoreError(f"{path}: cannot read Parquet ({str(exc).splitlines()[0]})") from None
    return columns, [(i, {c: None if v is None else str(v) for c, v in zip(columns, row)}, None)
                     for i, row in enumerate(data, start=1)]


def _records(path: Path, key: str, mtime: float, table, text_column, label_column, id_column) -> list[TextRecord]:
    columns, rows = table
    if label_column is None and "label" in columns and text_column != "label":
        label_column = "label"
    for name, col in (("--text-column", text_column), ("--label-column", label_column), ("--id-column", id_column)):
        if col is not None and rows and col not in columns:
            raise FeatstoreError(f"{path}: no column {col!r} for {name} (columns: {', '.join(map(str, columns))})")
    out, seen = [], set()
    for number, row, error in rows:
        rid = (row.get(id_column) if id_column else None) or str(number)
        rkey = f"{key}#{display_path(rid)}"
        label = row.get(label_column) if label_column else None
        if rkey in seen:
            error = error or f"duplicate id {rid!r}"
            rkey = f"{key}#row{number}"
        seen.add(rkey)
        text = row.get(text_column)
        if error is None and text is not None and _has_surrogates(text):
            error, text = "undecodable bytes (not UTF-8)", None
        size = None if text is None else len(text.encode("utf-8"))
        out.append(_checked(TextRecord(rkey, text, label.strip() if label else None, size, mtime, error)))
    return out


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True
