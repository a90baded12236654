"""Ingest: a staged shard file (shards.py) into the store, in one transaction, at most once.

Vectors whose content is already in the set are skipped, item rows are upserted by path, and the shard's key is
recorded in the `shards` table in the same transaction; a shard whose key is recorded is not read again. So
ingesting the same shard twice changes nothing, and a crash mid-ingest leaves the shard un-ingested.
"""
from __future__ import annotations

from pathlib import Path

from featstore.embed.shards import Shard, _sql_path
from featstore.store.db import ITEM_COLUMNS, EmbeddingSet, Store
from featstore.store.keys import upsert


def is_ingested(store: Store, eset: EmbeddingSet, shard: Shard) -> bool:
    return bool(store.con.execute("SELECT count(*) FROM shards WHERE set_id = ? AND shard_key = ?",
                                  [eset.set_id, shard.key]).fetchone()[0])


def ingest(store: Store, eset: EmbeddingSet, shard: Shard, path: Path, again: bool = False) -> dict | None:
    """Counts of what the shard added (embedded, copies, failed, failures), or None if it was ingested before.
    again: ingest it even so (its files are pending again: items marked removed since, now back on disk)."""
    if is_ingested(store, eset, shard) and not again:
        return None
    src = f"read_parquet('{_sql_path(path)}')"
    con = store.con
    with store.transaction():
        before = con.execute(f"SELECT count(*) FROM {eset.table}").fetchone()[0]
        con.execute(f"""INSERT INTO {eset.table}
            SELECT (SELECT coalesce(max(vec_id), 0) FROM {eset.table}) + row_number() OVER (ORDER BY pos), hash, vector
            FROM (SELECT hash, vector, row_number() OVER () AS pos FROM {src}) s
            WHERE vector IS NOT NULL AND hash NOT IN (SELECT hash FROM {eset.table})
            QUALIFY row_number() OVER (PARTITION BY hash ORDER BY pos) = 1""")
        embedded = con.execute(f"SELECT count(*) FROM {eset.table}").fetchone()[0] - before
        upsert(con, "items", ("path",), list(ITEM_COLUMNS), src, touch="updated_at")
        store.fill_copy_sizes(f"(SELECT path FROM {src})")
        failures = con.execute(f"SELECT path, error FROM {src} WHERE status = 'failed' ORDER BY path").fetchall()
        ok = con.execute(f"SELECT count(*) FROM {src} WHERE status = 'ok'").fetchone()[0]
        con.execute("INSERT INTO shards (set_id, shard_key, name, files) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [eset.set_id, shard.key, shard.name, len(shard.files)])
        store._bump_generation()
    return {"embedded": embedded, "copies": ok - embedded, "failed": len(failures), "failures": failures}
