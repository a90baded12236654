"""A contact sheet of an audit (matplotlib): one row per finding, its top-ranked items as thumbnails captioned
with item id, given and suggested label and score, under a title naming the task and embedding set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from featstore.heads.plot_io import check_plot_path, new_figure, save_figure
from featstore.paths import fs_path

PER_ROW = 8
DPI = 100                   # new_figure's: 1 inch = 100 px at 100% zoom
TILE = 1.7                  # inches per thumbnail column
THUMB = 150                 # thumbnail pixels (fits the tile at DPI)
FONT = 9                    # caption points: 12.5 px at DPI (legible at 100% zoom)
CAPTION_LINES = 4
LINE = 0.18                 # inches per caption line
GAP = 0.12                  # inches between a row's captions and the next heading
HEADER = 0.4                # inches for a finding's heading
PAD = 0.05                  # inches around each thumbnail
TITLE = 0.75                # inches for the sheet's title


def _fit(text, width_px: float, renderer, file_name: bool = False) -> None:
    """Shorten a caption until it is no wider than its tile (a file name loses its middle, other text its end)."""
    full = text.get_text()
    keep = len(full)
    while keep > 4 and text.get_window_extent(renderer).width > width_px:
        keep -= 1
        if file_name and "." in full[-6:]:        # keep the start and the extension
            tail = full[full.rindex("."):]
            text.set_text(full[:max(keep - len(tail) - 1, 1)] + "…" + tail)
        else:
            text.set_text(full[:keep - 1] + "…")


def _sections(report: dict, per_row: int) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(heading, [(path, caption lines)]) per finding that has items."""
    name = lambda p: Path(p).name                       # noqa: E731
    rows = [
        ("label issues: the given label is contradicted by the model and the neighbours (score: how likely the "
         "label is wrong)",
         [(r["path"], [f"#{r['item_id']}  score {r['score']:.2f}", f"given: {r['given']}",
                       f"suggested: {r['suggested']}", name(r["path"])]) for r in report["label_issues"]]),
        ("outliers: the most unique items (uniqueness: 1 - mean cosine to their nearest neighbours)",
         [(r["path"], [f"#{r['item_id']}  uniq. {r['score']:.2f}", f"label: {r['label'] or '-'}", name(r["path"])])
          for r in report["outliers"]]),
        ("near-duplicate groups (two items of each; cos: highest similarity in the group)",
         [(it["path"], [f"#{it['item_id']}  group {g + 1}", f"cos {grp['max_similarity']:.3f}",
                        f"label: {it['label'] or '-'}", name(it["path"])])
          for g, grp in enumerate(report["near_duplicates"]["groups"]) for it in grp["items"][:2]]),
        ("leakage: near-copies straddling the split (a training item beside its held-out copy)",
         [(p[side], [f"{'training' if side == 'train' else 'held-out'}  pair {i + 1}", f"cos {p['similarity']:.3f}",
                     f"label: {p[side + '_label'] or '-'}", name(p[side])])
          for i, p in enumerate(report["leakage"]["pairs"]) for side in ("train", "test")]),
    ]
    return [(heading, items[:per_row]) for heading, items in rows if items]


def _thumb(path: str) -> np.ndarray | None:
    try:
        with Image.open(fs_path(path)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB, THUMB))
            return np.asarray(im)
    except (OSError, ValueError):     # a file gone or not an image (text items)
        return None


def sheet_figure(report: dict, per_row: int = PER_ROW):
    """The sheet as a matplotlib Figure (fixed layout in inches, so captions never overlap)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    sections = _sections(report, per_row)
    tile_h = TILE + CAPTION_LINES * LINE + GAP
    width = max(per_row * TILE, 8.0)
    height = TITLE + max(len(sections), 1) * (HEADER + tile_h) + 0.1
    fig = new_figure(width, height)
    fig.set_layout_engine("none")
    renderer = FigureCanvasAgg(fig).get_renderer()
    top = height
    for y, text, style in ((0.12, f"audit of task {report['task']!r}: {report['n_items']} labelled items, "
                                  f"{report['model']} (embedding set {report['set_id']})", {"fontsize": 12,
                                                                                            "weight": "bold"}),
                           (0.45, "the top-ranked items of each finding, most likely first; #N is the item id "
                                  "(featstore search --id N)", {"fontsize": FONT + 1, "color": "0.25"})):
        _fit(fig.text(0.1 / width, 1 - y / height, text, va="top", **style), (width - 0.2) * DPI, renderer)
    top -= TITLE
    if not sections:
        fig.text(0.1 / width, (top - 0.3) / height, "nothing found", fontsize=FONT + 2, va="top")
    for heading, items in sections:
        _fit(fig.text(0.1 / width, (top - 0.1) / height, heading, fontsize=FONT + 2, weight="bold", va="top"),
             (width - 0.2) * DPI, renderer)
        top -= HEADER
        for c, (path, lines) in enumerate(items):
            ax = fig.add_axes(((c * TILE + PAD) / width, (top - TILE + PAD) / height,
                               (TILE - 2 * PAD) / width, (TILE - 2 * PAD) / height))
            ax.set_axis_off()
            img = _thumb(path)
            if img is None:
                ax.add_patch(_grey_tile(ax))
                ax.text(0.5, 0.5, "(not an image)", ha="center", va="center", fontsize=FONT, transform=ax.transAxes)
            else:
                ax.imshow(img, interpolation="antialiased")
            for i, line in enumerate(lines):
                _fit(fig.text((c * TILE + PAD) / width, (top - TILE - i * LINE) / height, line, fontsize=FONT,
                              va="top", color="black" if i < len(lines) - 1 else "0.35"),
                     (TILE - 3 * PAD) * DPI, renderer, file_name=i == len(lines) - 1)
        top -= tile_h
    return fig


def _grey_tile(ax):
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, transform=ax.transAxes, color="0.85")


def contact_sheet(report: dict, out: str | Path, per_row: int = PER_ROW) -> dict:
    """Write the sheet to `out` (.png, .svg or .pdf); returns how many rows and tiles it holds."""
    check_plot_path(out, "--sheet")
    sections = _sections(report, per_row)
    save_figure(sheet_figure(report, per_row), out, "--sheet")
    return {"sheet": str(out), "rows": len(sections), "tiles": sum(len(i) for _, i in sections)}
