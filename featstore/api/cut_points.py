"""The cut points of a backbone, as rows for people and scripts (`featstore models cuts MODEL`)."""
from __future__ import annotations


def cut_rows(model: str | None) -> list[dict]:
    """name, description, and once its bottom graph is exported, the activation's shape and fp16 bytes per view."""
    import math

    from featstore.models.catalog import resolve
    from featstore.models.cuts import bottom_path, cut_points, cut_shape

    spec = resolve(model)
    rows = []
    for p in cut_points(spec):
        exported = bottom_path(spec, p.name).with_suffix(".json").is_file()
        shape = cut_shape(spec, p.name) if exported else None
        rows.append({"model": spec.name, "cut": p.name, "description": p.description,
                     "shape": list(shape) if shape else None,
                     "bytes_per_view": 2 * math.prod(shape) if shape else None})
    return rows
