"""Python values as Arrow columns for DuckDB to scan in place: a batch's item rows and hashes reach DuckDB as one
table rather than as Python lists bound as statement parameters (each value converted on its own). Built from
buffers: pa.array would import pandas where it is installed (half a second and tens of MB, at a run's first
batch)."""
from __future__ import annotations

import numpy as np

NUMERIC = {"BIGINT": np.int64, "INTEGER": np.int32, "DOUBLE": np.float64}


def arrow_table(columns: dict[str, tuple[str, list]]):
    """{name: (DuckDB type, values)} as an Arrow table; types VARCHAR, BIGINT, INTEGER, DOUBLE; None is NULL;
    values a list (or tuple), or a numpy array."""
    import pyarrow as pa

    return pa.Table.from_arrays([column(kind, values) for kind, values in columns.values()], names=list(columns))


def column(kind: str, values: list):
    import pyarrow as pa

    n = len(values)
    if isinstance(values, np.ndarray):
        if kind != "VARCHAR" and values.dtype != object:        # numbers: the array's own buffer, no NULLs
            data = np.ascontiguousarray(values, dtype=NUMERIC[kind])
            return pa.Array.from_buffers(pa.from_numpy_dtype(data.dtype), n, [None, pa.py_buffer(data)])
        values = values.tolist()
    nulls = values.count(None)
    validity = None
    if nulls:
        missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
        validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    if kind == "VARCHAR":
        data, lengths = _utf8(["" if v is None else v for v in values] if nulls else values)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                     null_count=nulls)
    dtype = NUMERIC[kind]
    data = np.fromiter((0 if v is None else v for v in values) if nulls else values, dtype=dtype, count=n)
    return pa.Array.from_buffers(pa.from_numpy_dtype(dtype), n, [validity, pa.py_buffer(data)], null_count=nulls)


def _utf8(values: list) -> tuple[bytes, np.ndarray]:
    """The values' UTF-8 bytes end to end, and each one's length in bytes. All text in one join and one encode;
    only when that holds non-ASCII (bytes differ from characters) is each value encoded to count its bytes."""
    try:
        joined = "".join(values)
    except TypeError:                               # not all str: their str()
        values = [str(v) for v in values]
        joined = "".join(values)
    data = joined.encode()
    if len(data) == len(joined):
        return data, np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return data, np.fromiter((len(v.encode()) for v in values), dtype=np.int64, count=len(values))
