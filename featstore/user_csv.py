"""Small CSV files a user hands over (labels, queries): a header row, lower-cased column names, stripped cells."""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import FeatstoreError


def read_user_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows); an unreadable or non-UTF-8 file is one clear error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except UnicodeDecodeError as exc:
        raise FeatstoreError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        raise FeatstoreError(f"{path}: cannot read CSV ({exc})") from None
    return columns, rows
