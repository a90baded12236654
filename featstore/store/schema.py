"""The store's schema: its tables (DDL, with the version and the tables added since schema 1) and the records
read from them (an embedding set, an item)."""
from __future__ import annotations

from dataclasses import dataclass

FEATURE_FORMAT = 1   # featstore's own feature-format version: part of every embedding set's key
SCHEMA_VERSION = 5       # 2: + splits (a task's fixed held-out split), texts; 3: + runs, shards; 4: + knn_graph(s);
                         # 5: + item_meta (the user's metadata columns); older migrate on write
ADDED_TABLES = {"texts": ("hash", "text", "tokens", "truncated"), "splits": ("task", "hash", "split"),
                "runs": ("run_id", "started_at", "set_id", "source", "config", "summary"),
                "shards": ("set_id", "shard_key", "name", "files", "ingested_at"),
                "knn_graph": ("set_id", "vec_id", "rank", "neighbour_id", "cosine", "generation"),
                "knn_graphs": ("set_id", "generation", "k", "exact", "record"), "item_meta": ("path",)}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS item_ids START 1;
CREATE TABLE IF NOT EXISTS items (
    item_id    BIGINT PRIMARY KEY DEFAULT nextval('item_ids'),
    path       VARCHAR NOT NULL UNIQUE,
    hash       VARCHAR,
    size       BIGINT,
    mtime      DOUBLE,
    width      INTEGER,
    height     INTEGER,
    status     VARCHAR NOT NULL,
    error      VARCHAR,
    updated_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS labels (
    task  VARCHAR NOT NULL,
    path  VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    PRIMARY KEY (task, path)
);
CREATE TABLE IF NOT EXISTS embedding_sets (
    set_id         VARCHAR PRIMARY KEY,
    model          VARCHAR NOT NULL,
    dim            INTEGER NOT NULL,
    table_name     VARCHAR NOT NULL,
    onnx_path      VARCHAR NOT NULL,
    onnx_sha256    VARCHAR NOT NULL,
    preprocess     JSON NOT NULL,
    precision      VARCHAR NOT NULL,
    provider       VARCHAR NOT NULL,
    feature_format INTEGER NOT NULL,
    created_at     TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS heads (
    name       VARCHAR PRIMARY KEY,
    kind       VARCHAR NOT NULL,
    task       VARCHAR NOT NULL,
    set_id     VARCHAR NOT NULL,
    classes    JSON NOT NULL,
    params     JSON NOT NULL,
    metrics    JSON NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS texts (
    hash      VARCHAR PRIMARY KEY,
    text      VARCHAR NOT NULL,
    tokens    INTEGER NOT NULL,
    truncated BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS splits (
    task  VARCHAR NOT NULL,
    hash  VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    PRIMARY KEY (task, hash)
);
CREATE SEQUENCE IF NOT EXISTS run_ids START 1;
CREATE TABLE IF NOT EXISTS runs (
    run_id     BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    started_at TIMESTAMP NOT NULL,
    set_id     VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    config     JSON NOT NULL,
    summary    JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    set_id      VARCHAR NOT NULL,
    shard_key   VARCHAR NOT NULL,
    name        VARCHAR NOT NULL,
    files       INTEGER NOT NULL,
    ingested_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (set_id, shard_key)
);
CREATE TABLE IF NOT EXISTS head_arrays (
    head  VARCHAR NOT NULL,
    name  VARCHAR NOT NULL,
    shape INTEGER[] NOT NULL,
    data  DOUBLE[] NOT NULL,
    PRIMARY KEY (head, name)
);
CREATE TABLE IF NOT EXISTS knn_graph (      -- each live vector's k nearest (search/knn_graph.py); no key: bulk rows
    set_id       VARCHAR NOT NULL,
    vec_id       BIGINT NOT NULL,
    rank         INTEGER NOT NULL,
    neighbour_id BIGINT NOT NULL,
    cosine       FLOAT NOT NULL,
    generation   BIGINT NOT NULL            -- the store generation the row was computed at
);
CREATE TABLE IF NOT EXISTS knn_graphs (     -- one per set: the generation the graph reflects, how it was made
    set_id     VARCHAR PRIMARY KEY,
    generation BIGINT NOT NULL,
    k          INTEGER NOT NULL,
    exact      BOOLEAN NOT NULL,
    record     JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS item_meta (      -- the user's metadata by path: one column each (ADD COLUMN as they come)
    path VARCHAR PRIMARY KEY
);
"""


@dataclass(frozen=True)
class EmbeddingSet:
    """One embedding set: vectors from one exact backbone + preprocessing + precision + provider class."""

    set_id: str
    model: str
    dim: int
    table: str
    onnx_path: str
    onnx_sha256: str
    preprocess: dict
    precision: str
    provider: str

    @property
    def modality(self) -> str:
        return self.preprocess.get("modality", "image")


@dataclass(frozen=True)
class Item:
    item_id: int
    path: str
    hash: str | None
    size: int | None
    mtime: float | None
    status: str
    error: str | None
