"""The store's schema: its tables (DDL, with the version and the tables added since schema 1) and the records
read from them (an embedding set, an item)."""
from __future__ import annotations

from dataclasses import dataclass

FEATURE_FORMAT = 1   # featstore's own feature-format version: part of every embedding set's key
SCHEMA_VERSION = 7       # 2: + splits (a task's fixed held-out split), texts; 3: + runs, shards; 4: + knn_graph(s);
                         # 5: + item_meta (the user's metadata columns); 6: + edits, edit_rows, tags, exclusions,
                         # audit_findings (curation, store/edits.py), activation_sets (cut activations,
                         # store/activations.py); 7: new stores' items.path, labels (task, path) and vector
                         # hashes without DuckDB indexes (featstore keeps them unique: keys.py; older stores keep
                         # theirs); older migrate on write
ADDED_TABLES = {"texts": ("hash", "text", "tokens", "truncated"), "splits": ("task", "hash", "split"),
                "runs": ("run_id", "started_at", "set_id", "source", "config", "summary"),
                "shards": ("set_id", "shard_key", "name", "files", "ingested_at"),
                "knn_graph": ("set_id", "vec_id", "rank", "neighbour_id", "cosine", "generation"),
                "knn_graphs": ("set_id", "generation", "k", "exact", "record"), "item_meta": ("path",),
                "edits": ("edit_id", "made_at", "who", "action", "task", "detail", "undone_by"),
                "edit_rows": ("edit_id", "kind", "key", "path", "before", "after"),
                "tags": ("path", "tag"), "exclusions": ("path", "reason"),
                "audit_findings": ("task", "made_at", "kind", "rank", "item_id", "path", "score", "given", "suggested",
                                   "grp", "reason"),
                "activation_sets": ("act_id", "set_id", "model", "cut", "shape", "views", "augment", "table_name",
                                    "onnx_path", "onnx_sha256", "dtype", "created_at")}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS item_ids START 1;
CREATE TABLE IF NOT EXISTS items (
    item_id    BIGINT PRIMARY KEY DEFAULT nextval('item_ids'),
    path       VARCHAR NOT NULL,           -- unique: keys.py
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
    label VARCHAR NOT NULL                  -- (task, path) unique: keys.py
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
CREATE SEQUENCE IF NOT EXISTS edit_ids START 1;
CREATE TABLE IF NOT EXISTS edits (          -- curation writes (store/edits.py): who, what, when; undone_by: a later
    edit_id   BIGINT PRIMARY KEY DEFAULT nextval('edit_ids'),
    made_at   TIMESTAMP NOT NULL,
    who       VARCHAR NOT NULL,
    action    VARCHAR NOT NULL,
    task      VARCHAR,
    detail    JSON NOT NULL,
    undone_by BIGINT
);
CREATE TABLE IF NOT EXISTS edit_rows (      -- each value an edit changed: kind label (key: the task), tag (key: the
    edit_id BIGINT NOT NULL,                -- tag) or excluded; before/after the value (NULL: none), so undo is exact
    kind    VARCHAR NOT NULL,
    key     VARCHAR,
    path    VARCHAR NOT NULL,
    before  VARCHAR,
    after   VARCHAR
);
CREATE TABLE IF NOT EXISTS tags (
    path VARCHAR NOT NULL,
    tag  VARCHAR NOT NULL,
    PRIMARY KEY (path, tag)
);
CREATE TABLE IF NOT EXISTS exclusions (     -- left out of fitting and evaluation: path -> why (duplicate, outlier...)
    path   VARCHAR PRIMARY KEY,
    reason VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_findings ( -- the newest `featstore audit` of each task, one row per finding's item
    task      VARCHAR NOT NULL,
    made_at   TIMESTAMP NOT NULL,
    kind      VARCHAR NOT NULL,
    rank      INTEGER NOT NULL,
    item_id   BIGINT,
    path      VARCHAR NOT NULL,
    score     DOUBLE,
    given     VARCHAR,
    suggested VARCHAR,
    grp       INTEGER,
    reason    VARCHAR
);
CREATE TABLE IF NOT EXISTS activation_sets ( -- cut activations (store/activations.py): one table act_* each, fp16 BLOBs
    act_id      VARCHAR PRIMARY KEY,
    set_id      VARCHAR NOT NULL,            -- the pooled embedding set of the same backbone and preprocessing
    model       VARCHAR NOT NULL,
    cut         VARCHAR NOT NULL,
    shape       JSON NOT NULL,               -- per item per view
    views       INTEGER NOT NULL,
    augment     JSON NOT NULL,               -- seed and parameters of views 1..
    table_name  VARCHAR NOT NULL,
    onnx_path   VARCHAR NOT NULL,
    onnx_sha256 VARCHAR NOT NULL,
    dtype       VARCHAR NOT NULL,
    created_at  TIMESTAMP DEFAULT current_timestamp
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
