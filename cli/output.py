"""Printing for the CLI: aligned tables for people, JSON for scripts."""
from __future__ import annotations

import json
import re

import click


def one_line(text) -> str:
    """Text for one line of human output: control characters (a newline in a file name...) as escapes."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m[0])[1:-1], "" if text is None else str(text))


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    """A plain aligned text table; align is one char per column ('l' or 'r')."""
    cells = [[one_line(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def line(vals):
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(vals, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
