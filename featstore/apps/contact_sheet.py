"""A PNG contact sheet of an audit: one row per finding, its top-ranked items as captioned thumbnails (Pillow)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from featstore.paths import fs_path

THUMB = 128
CAPTION = 28
TITLE = 22
PER_ROW = 8


def _tiles(report: dict, per_row: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """(row title, [(path, caption)]) per finding that has items."""
    rows = [("label issues (given -> suggested)",
             [(r["path"], f"{r['given']}->{r['suggested']} {r['score']:.2f}") for r in report["label_issues"]]),
            ("outliers (uniqueness)", [(r["path"], f"{r['label'] or '-'} {r['score']:.2f}")
                                       for r in report["outliers"]]),
            ("near-duplicate groups", [(it["path"], f"group {g + 1} {grp['max_similarity']:.3f}")
                                       for g, grp in enumerate(report["near_duplicates"]["groups"])
                                       for it in grp["items"][:2]]),
            ("leakage (train | held-out)", [(p[side], f"{side} {p['similarity']:.3f}")
                                            for p in report["leakage"]["pairs"] for side in ("train", "test")])]
    return [(title, items[:per_row]) for title, items in rows if items]


def _thumb(path: str) -> Image.Image:
    try:
        with Image.open(fs_path(path)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB, THUMB))
            return im.copy()
    except (OSError, ValueError):     # a file gone or not an image (text items): a grey tile
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))


def contact_sheet(report: dict, out: str | Path, per_row: int = PER_ROW) -> dict:
    """Write the sheet to `out` (PNG); returns how many rows and tiles it holds."""
    rows = _tiles(report, per_row)
    width = max(per_row * THUMB, 400)
    height = max(len(rows), 1) * (TITLE + THUMB + CAPTION)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if not rows:
        draw.text((8, 8), f"task {report['task']}: nothing found", fill="black")
    for r, (title, items) in enumerate(rows):
        y = r * (TITLE + THUMB + CAPTION)
        draw.text((4, y + 4), title, fill="black")
        for c, (path, caption) in enumerate(items):
            im = _thumb(path)
            x = c * THUMB
            sheet.paste(im, (x + (THUMB - im.width) // 2, y + TITLE + (THUMB - im.height) // 2))
            draw.text((x + 2, y + TITLE + THUMB + 2), caption[:22], fill="black")
            draw.text((x + 2, y + TITLE + THUMB + 14), Path(path).name[:22], fill=(90, 90, 90))
    sheet.save(out, format="PNG")
    return {"sheet": str(out), "rows": len(rows), "tiles": sum(len(i) for _, i in rows)}
