"""PNG figures drawn with Pillow (no plotting dependency): a confusion matrix and a few-shot curve."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import FeatstoreError

CELL, MARGIN = 64, 140


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:          # Pillow < 10.1
        return ImageFont.load_default()


def _save(img: Image.Image, path: str | Path) -> None:
    try:
        img.save(path, format="PNG")
    except OSError as exc:
        raise FeatstoreError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None


def confusion_png(confusion: dict, path: str | Path, title: str = "") -> None:
    """Rows true, columns predicted; cells shaded by row-normalised rate, labelled with counts."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    n = len(labels)
    w, h = MARGIN + n * CELL + 20, MARGIN + n * CELL + 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(11)
    d.text((10, 10), title, fill="black", font=font)
    d.text((MARGIN, 34), "predicted", fill="black", font=small)
    d.text((10, MARGIN - 18), "true", fill="black", font=small)
    for j, lab in enumerate(labels):
        d.text((MARGIN + j * CELL + 4, MARGIN - 40 + (j % 2) * 14), lab[:10], fill="black", font=small)
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        d.text((10, MARGIN + i * CELL + CELL // 2 - 6), labels[i][:18], fill="black", font=small)
        for j, count in enumerate(row):
            rate = count / total
            shade = int(255 * (1 - rate))
            x, y = MARGIN + j * CELL, MARGIN + i * CELL
            d.rectangle([x, y, x + CELL - 2, y + CELL - 2], fill=(shade, shade, 255), outline="grey")
            d.text((x + CELL // 2 - 8, y + CELL // 2 - 6), str(count), fill="white" if rate > 0.5 else "black",
                   font=font)
    _save(img, path)


def curve_png(curve: dict, path: str | Path) -> None:
    """Few-shot accuracy (mean, with min-max bars) against shots per class, on a log-like even spacing."""
    rows = curve["rows"]
    W, H, L, B = 520, 360, 60, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    small = _font(11)
    d.text((10, 8), f"few-shot: {curve['task']} ({curve['kind']}, {curve['model']})", fill="black", font=_font(13))
    x0, x1, y0, y1 = L, W - 20, H - B, 40
    d.line([x0, y0, x1, y0], fill="black")
    d.line([x0, y0, x0, y1], fill="black")

    def y_of(acc):
        return y0 - (y0 - y1) * acc

    for t in (0, 0.25, 0.5, 0.75, 1.0):
        d.line([x0 - 4, y_of(t), x0, y_of(t)], fill="black")
        d.text((10, y_of(t) - 6), f"{100 * t:.0f}%", fill="black", font=small)
    step = (x1 - x0) / max(len(rows), 1)
    points = []
    for i, r in enumerate(rows):
        x = x0 + step * (i + 0.5)
        d.line([x, y_of(r["accuracy_min"]), x, y_of(r["accuracy_max"])], fill=(120, 120, 255), width=2)
        points.append((x, y_of(r["accuracy_mean"])))
        d.text((x - 8, y0 + 8), str(r["shots"]), fill="black", font=small)
    d.line(points, fill="blue", width=2)
    for x, y in points:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="blue")
    d.line([x0, y_of(curve["chance"]), x1, y_of(curve["chance"])], fill="grey")
    d.text((x1 - 90, y_of(curve["chance"]) - 14), "chance", fill="grey", font=small)
    d.text((W // 2 - 50, H - 22), "examples per class", fill="black", font=small)
    _save(img, path)
