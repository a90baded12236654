"""Vectors in tables: the `vector` column of `fs.to_pandas()` (one float32 array per row, each a view of one
(n, dim) block) and of `fs.to_arrow()` (a fixed-size list column), and `featstore.vectors_of` to get the 2-D
float32 array back from either, filtered or not."""
from __future__ import annotations

import numpy as np

from featstore.errors import FeatstoreError


def vector_rows(column) -> list[np.ndarray]:
    """A fixed-size list Arrow column as one float32 array per row, all views of one contiguous (n, dim) block."""
    return list(fixed_size_to_numpy(column))


def fixed_size_to_numpy(column) -> np.ndarray:
    """A fixed-size list Arrow column (Array or ChunkedArray) as a float32 (n, dim) array."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = array.type.list_size
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(array), dim), dtype=np.float32)


def vectors_of(data) -> np.ndarray:
    """The vectors of a DataFrame from `fs.to_pandas()` (or of its `vector` column, or of a pyarrow Table from
    `fs.to_arrow()`), filtered or not, as one float32 array (n_rows, dim) in row order."""
    import pyarrow as pa

    column = data
    if isinstance(data, pa.Table):
        column = data.column("vector") if "vector" in data.column_names else None
    elif hasattr(data, "columns"):                                                  # a pandas DataFrame
        column = data["vector"] if "vector" in data.columns else None
    if column is None:
        raise FeatstoreError("vectors_of: no 'vector' column (use fs.to_pandas() or fs.to_arrow())")
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        if not pa.types.is_fixed_size_list(column.type):
            raise FeatstoreError(f"vectors_of: expected a fixed-size list column, got {column.type}")
        return fixed_size_to_numpy(column)
    if hasattr(column, "dtype") and hasattr(column.dtype, "pyarrow_dtype"):       # a pandas ArrowDtype column
        return vectors_of(pa.chunked_array([pa.array(column)]))
    rows = list(column)
    if not rows:
        return np.empty((0, 0), dtype=np.float32)
    try:
        return np.ascontiguousarray(np.stack([np.asarray(r, dtype=np.float32) for r in rows]))
    except ValueError as exc:
        raise FeatstoreError(f"vectors_of: the rows are not vectors of one length ({exc})") from None
