"""Figure files: which formats a plot may be written in, matplotlib loaded only when a plot is asked for (Agg, no
window), and saving a figure with a one-line error when that fails."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import FeatstoreError

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
INSTALL = "pip install 'featstore[plots]'"


def check_plot_path(path: str | Path, option: str = "--plot") -> str:
    """The format a plot file's extension names (png, svg, pdf), checked with its folder before any work."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise FeatstoreError(f"{option} {path}: unknown figure type {p.suffix or '(no extension)'!r}; "
                             f"name the file .png, .svg or .pdf")
    if not p.resolve().parent.is_dir():
        raise FeatstoreError(f"{option} {path}: folder {p.resolve().parent} does not exist")
    return fmt


def matplotlib():
    """The matplotlib module, with the Agg backend unless the caller already chose one (a notebook's pyplot)."""
    try:
        import matplotlib as mpl
    except ImportError:
        raise FeatstoreError(f"plots need matplotlib, which is not installed: {INSTALL}") from None
    if "matplotlib.pyplot" not in sys.modules:
        mpl.use("Agg")
    return mpl


def new_figure(width: float, height: float):
    """A matplotlib Figure that no pyplot state holds (nothing to close, safe in a server thread)."""
    matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path: str | Path, option: str = "--plot") -> None:
    """Write `fig` in the format its extension names; a file that cannot be written is one line."""
    fmt = check_plot_path(path, option)
    try:
        fig.savefig(path, format=fmt, dpi=100, metadata=_metadata(fmt))
    except OSError as exc:
        raise FeatstoreError(f"{option} {path}: cannot write the plot ({exc.strerror or exc})") from None


def _metadata(fmt: str) -> dict | None:
    """No creation date in SVG/PDF output, so the same plot gives the same file."""
    return {"Date": None} if fmt in ("svg", "pdf") else None
