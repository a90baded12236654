"""Shards: a source listing cut into fixed, named pieces, and each piece's results staged as one Parquet file.

A shard is `shard_size` consecutive files of the sorted listing. Its key hashes the embedding set and every file's
stored path, size and mtime, so the same listing gives the same shards whatever the store holds, and a changed
file gives its shard a new key (the old staged file no longer counts). A staged file holds one row per file: the
item record (path, hash, size, mtime, width, height, status, error), its label, and the vector when the backbone
ran on it (NULL for failures and for copies). Files are written under a temporary name and renamed, so a staged
file that exists is complete; `valid` also checks its key and row count. DuckDB writes and reads them (the vectors
handed to it as Arrow, store/vectors.py). Staging is a local folder or an fsspec URL (`Staging`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.embed.source import SourceFile
from featstore.store.vectors import vector_table
from featstore.uri import download, is_uri, join, upload

COLUMNS = ("path", "label", "hash", "size", "mtime", "width", "height", "status", "error")


@dataclass(frozen=True)
class Shard:
    index: int
    key: str
    files: tuple[SourceFile, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-{self.key}.parquet"

    def as_row(self) -> dict:
        """The shard as one row of plain columns (what a Ray Data block carries to a worker)."""
        return {"index": self.index, "key": self.key, "paths": [f.path for f in self.files],
                "keys": [f.key for f in self.files], "labels": [f.label for f in self.files],
                "sizes": [f.size for f in self.files], "mtimes": [f.mtime for f in self.files],
                "errors": [f.error for f in self.files]}

    @classmethod
    def from_row(cls, row: dict) -> "Shard":
        files = tuple(SourceFile(p, k, lab, s, m, e) for p, k, lab, s, m, e in
                      zip(row["paths"], row["keys"], row["labels"], row["sizes"], row["mtimes"], row["errors"]))
        return cls(int(row["index"]), str(row["key"]), files)


def make_shards(files: list[SourceFile], set_id: str, shard_size: int) -> list[Shard]:
    out = []
    for i, start in enumerate(range(0, len(files), shard_size)):
        chunk = tuple(files[start:start + shard_size])
        blob = json.dumps([set_id] + [[f.key, f.size, f.mtime] for f in chunk])
        out.append(Shard(i, hashlib.sha256(blob.encode()).hexdigest()[:12], chunk))
    return out


def write(path: Path, shard: Shard, rows: list[dict], vectors: dict[str, np.ndarray], dim: int) -> None:
    """One shard's results as a Parquet file (atomically). rows: item records in listing order; vectors: the
    new vectors of this shard by content hash."""
    import duckdb

    tmp = path.with_name(path.name + ".tmp")
    con = duckdb.connect()
    try:
        cols = {c: [r.get(c) for r in rows] for c in COLUMNS}
        con.execute("CREATE TABLE rows (path VARCHAR, label VARCHAR, hash VARCHAR, size BIGINT, mtime DOUBLE, "
                    "width INTEGER, height INTEGER, status VARCHAR, error VARCHAR)")
        con.execute("INSERT INTO rows SELECT " + ", ".join(f"unnest(${i + 1})" for i in range(len(COLUMNS))),
                    [cols[c] for c in COLUMNS])
        hashes = list(vectors)
        mat = np.stack([vectors[h] for h in hashes]) if hashes else np.zeros((0, dim), np.float32)
        con.register("flat", vector_table(mat))
        con.execute("CREATE TABLE vecs AS SELECT $1[r + 1] AS hash, vector FROM flat", [hashes])
        # a vector goes on the first row of its content only
        con.execute(f"""COPY (SELECT rows.* EXCLUDE (rn, pos), CASE WHEN rn = 1 THEN vecs.vector END AS vector, ? AS shard_key
                              FROM (SELECT *, row_number() OVER (PARTITION BY hash ORDER BY path) AS rn,
                                           row_number() OVER () AS pos FROM rows) rows
                              LEFT JOIN vecs USING (hash) ORDER BY pos)
                        TO '{_sql_path(tmp)}' (FORMAT parquet)""", [shard.key])
    finally:
        con.close()
    os.replace(tmp, path)


def valid(path: Path, shard: Shard) -> bool:
    """True when a staged file exists, reads, and belongs to this shard (key and row count)."""
    import duckdb

    if not path.is_file():
        return False
    try:
        n, keys = duckdb.connect().execute(
            f"SELECT count(*), list(DISTINCT shard_key) FROM read_parquet('{_sql_path(path)}')").fetchone()
    except duckdb.Error:
        return False
    return n == len(shard.files) and keys == [shard.key]


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


class Staging:
    """Where finished shards wait to be ingested: a local folder, or an fsspec URL (s3://, gs://, file://, ...)
    that the driver and every worker can reach; a URL's shard is written locally and uploaded whole, and read
    through a downloaded copy."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.remote = is_uri(self.location)
        if not self.remote:
            Path(self.location).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return self.location

    def put(self, shard: Shard, rows: list[dict], vectors: dict[str, np.ndarray], dim: int) -> None:
        if not self.remote:
            return write(Path(self.location) / shard.name, shard, rows, vectors, dim)
        with tempfile.TemporaryDirectory(prefix="featstore-shard-") as tmp:
            local = Path(tmp) / shard.name
            write(local, shard, rows, vectors, dim)
            upload(local, join(self.location, shard.name))

    @contextmanager
    def local(self, shard: Shard):
        """A local path to the shard's staged file (a downloaded copy for a URL), or None when there is none."""
        if not self.remote:
            path = Path(self.location) / shard.name
            yield path if path.is_file() else None
            return
        with tempfile.TemporaryDirectory(prefix="featstore-shard-") as tmp:
            local = Path(tmp) / shard.name
            yield local if download(join(self.location, shard.name), local) else None

    def valid(self, shard: Shard) -> bool:
        with self.local(shard) as path:
            return path is not None and valid(path, shard)
