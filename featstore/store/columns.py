"""Python values as Arrow columns for DuckDB to scan in place: a batch's item rows and hashes reach DuckDB as one
table rather than as Python lists bound as statement parameters (each value converted on its own). Built from
buffers: pa.array would import pandas where it is installed (half a second and tens of MB, at a run's first
batch)."""
from __future__ import annotations

import numpy as np

NUMERIC = {"BIGINT": np.int64, "INTEGER": np.int32, "DOUBLE": np.float64}


def arrow_table(columns: dict[str, tuple[str, list]]):
    """{name: (DuckDB type, values)} as an Arrow table; types VARCHAR, BIGINT, INTEGER, DOUBLE; None is NULL."""
    import pyarrow as pa

    return pa.Table.from_arrays([column(kind, values) for kind, values in columns.values()], names=list(columns))


def column(kind: str, values: list):
    import pyarrow as pa

    n = len(values)
    missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
    nulls = int(missing.sum())
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if nulls else None
    if kind == "VARCHAR":
        encoded = [b"" if v is None else str(v).encode() for v in values]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
        return pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets),
                                                            pa.py_buffer(b"".join(encoded))], null_count=nulls)
    dtype = NUMERIC[kind]
    data = np.fromiter((0 if v is None else v for v in values), dtype=dtype, count=n)
    return pa.Array.from_buffers(pa.from_numpy_dtype(dtype), n, [validity, pa.py_buffer(data)], null_count=nulls)
