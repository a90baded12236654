"""The store's natural keys, kept unique by featstore rather than by DuckDB indexes: an item's path, a label's
(task, path) and a vector's content hash within its set.

DuckDB keeps a UNIQUE column in an index (an ART) updated on every insert; on strings that was nearly half of a
bulk write's CPU time (200,000 rows: about 0.25 s per key). Since schema 7 these three tables are made without
those indexes and the writes below check the keys themselves. One writer holds a store at a time (lock.py), so a
check made inside the writer's transaction cannot be raced. Stores made before schema 7 keep their indexes; the
same code writes both. Integer keys (item_id, vec_id), which cost little, stay DuckDB's.
"""
from __future__ import annotations

import duckdb

from featstore.errors import FeatstoreError


def upsert(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...], cols: list[str], source: str,
           params: list | dict | None = None, touch: str | None = None) -> None:
    """Insert the rows of `source` (a relation or subquery naming `keys` and `cols`) into `table`; rows whose keys
    are stored already get the new values of their other `cols` instead (and `touch`, a column set to now()).
    Refuses a `source` holding the same keys twice, naming them."""
    params = params or []
    key_list = ", ".join(keys)
    twice = con.execute(f"SELECT {key_list} FROM {source} GROUP BY ALL HAVING count(*) > 1 LIMIT 1",
                        params).fetchall()
    if twice:
        raise FeatstoreError(f"{table}: {' / '.join(map(str, twice[0]))} appears more than once in one write")
    match = " AND ".join(f"t.{k} = n.{k}" for k in keys)
    insert = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {source} n"
    stored = con.execute(f"SELECT count(*) FROM {table} t JOIN {source} n ON {match}", params).fetchall()[0][0]
    if not stored:                                     # a first write of these keys: a plain insert
        con.execute(insert, params)
        return
    values = [c for c in cols if c not in keys]
    sets = [f"{c} = n.{c}" for c in values] + ([f"{touch} = now()"] if touch else [])
    if sets:
        con.execute(f"UPDATE {table} t SET {', '.join(sets)} FROM {source} n WHERE {match}", params)
    # the new rows in the order given (DuckDB may run the anti-join from either side): ids follow that order
    con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM "
                f"(SELECT *, row_number() OVER () AS _pos FROM {source}) n "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match}) ORDER BY _pos", params)


def check_new_hashes(con: duckdb.DuckDBPyConnection, table: str, source: str) -> None:
    """Refuse vectors for contents `table` (a set's vector table) holds already, or that `source` holds twice: a
    set keeps one vector per content."""
    row = con.execute(f"""SELECT hash, 'twice in one write' FROM {source} GROUP BY hash HAVING count(*) > 1
        UNION ALL SELECT hash, 'already stored' FROM {source} WHERE hash IN (SELECT hash FROM {table}) LIMIT 1""").fetchall()
    if row:
        raise FeatstoreError(f"{table}: a vector for content {row[0][0]} is {row[0][1]} (a set keeps one per content)")


def duplicate_keys(con: duckdb.DuckDBPyConnection, vector_tables: list[str]) -> list[dict]:
    """Keys stored more than once (none, unless something wrote around this module): for `featstore verify`."""
    found = []
    for table, keys in [("items", "path"), ("labels", "task, path")] + [(t, "hash") for t in vector_tables]:
        for row in con.execute(f"SELECT {keys}, count(*) FROM {table} GROUP BY ALL HAVING count(*) > 1 "
                               f"ORDER BY ALL LIMIT 20").fetchall():
            found.append({"table": table, "key": " / ".join(map(str, row[:-1])), "rows": row[-1]})
    return found
