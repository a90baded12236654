"""The filter guard: hostile `--where` conditions refused with one line through all three doors (CLI, Python API,
HTTP), the store unchanged and nothing read, written or fetched outside it; plain conditions (with comments,
quoted names, keywords inside strings) allowed and answered as their plain form; and every filter bounded in
time."""
import hashlib
import os
from pathlib import Path

import pytest

from conftest import embed_into_new_store

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

ESCAPE_FILE = "/tmp/featstore-guard-escape.csv"

HOSTILE = [
    # files
    "CAST((SELECT content FROM read_text('/etc/passwd')) AS INTEGER) = 1",
    "len(read_text('/etc/passwd')[1].content) > 0",
    "path IN (FROM read_csv('/etc/passwd'))",
    "path IN (FROM '/etc/passwd')",
    "read_csv_auto('/etc/passwd') IS NOT NULL",
    "read_blob('/etc/hostname') IS NOT NULL",
    "read_json('/etc/x.json') IS NOT NULL",
    "glob('/*') IS NOT NULL",
    "EXISTS (FROM glob('/*'))",
    "parquet_metadata('/tmp/x.parquet') IS NOT NULL",
    "sniff_csv('/etc/passwd') IS NOT NULL",
    "query_table('items') IS NOT NULL",
    "query('SELECT 1') IS NOT NULL",
    # network and extensions
    "path IN (FROM read_csv('http://127.0.0.1:9/x.csv'))",
    "path IN (FROM read_parquet('s3://bucket/key.parquet'))",
    "sql_auto_complete('SEL') IS NOT NULL",
    "label COLLATE de = 'x'",
    "CAST(width AS GEOMETRY) IS NULL",
    "label = 'x' AND INSTALL httpfs",
    "LOAD httpfs",
    "json_extract(path, '$.a') IS NOT NULL",
    # settings and the environment
    "current_setting('threads') > 0",
    "getenv('HOME') = 'x'",
    "getvariable('x') IS NULL",
    "EXISTS (FROM duckdb_settings())",
    "EXISTS (FROM duckdb_extensions())",
    "current_database() = 'store'",
    "which_secret('s3://x', 's3') IS NULL",
    # subqueries
    "(SELECT 1) = 1",
    "EXISTS (SELECT 1)",
    "label IN (SELECT label FROM labels)",
    "hash IN (SELECT hash FROM heads)",
    "label = ANY (SELECT 'roses')",
    "(FROM items LIMIT 1) IS NOT NULL",
    # set operations and statements
    "1=0)) UNION ALL SELECT vec_id FROM emb WHERE ((1=1",
    "label = 'x' UNION SELECT 1",
    "true) INTERSECT (SELECT 1",
    "true) EXCEPT SELECT 1 --",
    "true; DROP TABLE items",
    "true); DELETE FROM items; SELECT (1",
    f"label = 'x'; COPY items TO '{ESCAPE_FILE}'",
    f"true COPY items TO '{ESCAPE_FILE}'",
    "ATTACH '/tmp/featstore-guard.duckdb'",
    "PRAGMA version",
    "SET threads = 1",
    # clauses after the condition, comments
    "true) ORDER BY (1",
    "true) LIMIT (1",
    "true) GROUP BY (1",
    "true) --",
    "label = 'x' /* never closed",
    # quoting, names, parameters
    "label = 'unterminated",
    '"vector" IS NOT NULL',
    "vector IS NOT NULL",
    "status = 'removed'",
    "vec_id = 1",
    "labels.label = 'x'",
    "main.items.path = 'x'",
    "label = $task",
    "label = ?",
    "label = $1",
    "#1 = 1",
    "COLUMNS('.*') IS NULL",
    # cost: lists, long strings, aggregates, windows, size
    "list_sum(list_transform(range(item_id*2000), lambda x: x*x)) > 0",
    "length(repeat(path,100000))>0",
    "length(lpad(path, 100000000, 'x')) > 0",
    "length(printf('%0100000000d', 1)) > 0",
    "length(replace(path, '/', 'xxxxxxxxxxxxxxxxxxxx')) > 0",
    "[1,2,3] = [1]",
    "{'a': 1} IS NOT NULL",
    "unnest([1]) = 1",
    "generate_series(1, 10) IS NOT NULL",
    "length(string_agg(path, ',')) > 0",
    "count(*) > 0",
    "row_number() OVER () > 1",
    "lower(" * 30 + "path" + ")" * 30 + " = 'x'",
    "label IN (" + ", ".join(f"'l{i}'" for i in range(300)) + ")",
    "label = '" + "x" * 1000 + "'",
    # nothing, or not a condition
    "",
    "   ",
    "label = 'a\x00'",
]

ALLOWED = {     # condition -> its plain form, which must answer the same
    "label = 'roses' -- a trailing comment": "label = 'roses'",
    "/* leading */ label = 'roses'": "label = 'roses'",
    '"label" = \'roses\'': "label = 'roses'",
    "item.label = 'roses'": "label = 'roses'",
    "LABEL = 'roses'": "label = 'roses'",
    "label = 'roses' OR path LIKE '%select * from items; drop%'": "label = 'roses'",
    "lower(label) IN ('roses', 'tulips') AND width > 0": "label IN ('roses', 'tulips')",
    "label ILIKE 'ROS%' ESCAPE '!'": "label = 'roses'",
    "CASE WHEN width > 0 THEN label END = 'roses'": "label = 'roses'",
    "CAST(item_id AS VARCHAR) <> '' AND split IS NULL AND label = 'roses'": "label = 'roses'",
    "year(updated_at) > 2000 AND regexp_matches(path, 'roses/')": "label = 'roses'",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    return embed_into_new_store(tmp_path_factory, "guard")


@pytest.fixture(scope="module")
def client(store):
    from featstore.serve.app import create_app
    from featstore.serve.state import ServerState

    state = ServerState(store, refresh=False)
    with TestClient(create_app(state), base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as c:
        yield c
    state.close()


def fingerprint(store: Path) -> dict:
    """Every file of the store with its content digest (the DuckDB file, its WAL, the indexes)."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def test_the_hostile_list_is_long_enough():
    assert len(HOSTILE) >= 54 and len(set(HOSTILE)) == len(HOSTILE)


def test_the_guard_itself_refuses_every_hostile_condition():
    """Refused by featstore's allow-list before DuckDB sees the condition, not by whatever DuckDB says."""
    from featstore.errors import FeatstoreError
    from featstore.store.where_guard import check_where

    for where in HOSTILE:
        with pytest.raises(FeatstoreError, match="^where: "):
            check_where(where)


def test_hostile_conditions_are_refused_through_every_door(run, store, client):
    import featstore
    from featstore.errors import FeatstoreError

    before = fingerprint(store)
    fs = featstore.open(store)
    for where in HOSTILE:
        r = run("search", "--id", "1", "-k", "3", "--task", "flowers", "--where", where, "--store", store, ok=False)
        assert r.exit_code == 1, (where, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: where") and "Traceback" not in r.output, (where,
                                                                                                          r.output)
        with pytest.raises(FeatstoreError, match="^where") as err:
            fs.search(ids=[1], k=3, task="flowers", where=where)
        assert "\n" not in str(err.value)
        for answer in (client.get("/items", params={"where": where, "task": "flowers"}),
                       client.post("/search", json={"id": 1, "k": 3, "where": where, "task": "flowers"})):
            if where == "":
                assert answer.status_code == 200          # over HTTP an empty field is no filter, as in a form
                continue
            assert answer.status_code in (400, 422), (where, answer.status_code, answer.text)
            message = answer.json()["error"]
            assert "\n" not in message and "/etc/passwd" not in message.replace(where, ""), (where, message)
        assert fingerprint(store) == before, where
    assert not os.path.exists(ESCAPE_FILE) and not os.path.exists("/tmp/featstore-guard.duckdb")
    assert not (Path.home() / ".duckdb" / "extensions").exists() or _untouched_extensions()


def _untouched_extensions() -> bool:
    """~/.duckdb/extensions may predate the test (another tool's); then nothing in it is newer than the run."""
    import time

    folder = Path.home() / ".duckdb" / "extensions"
    return all(time.time() - p.stat().st_mtime > 600 for p in folder.rglob("*"))


def test_plain_conditions_answer_as_their_plain_form(run, store, client):
    import featstore

    fs = featstore.open(store)
    for where, plain in ALLOWED.items():
        got = fs.search(ids=[1], k=5, task="flowers", where=where)[0]
        want = fs.search(ids=[1], k=5, task="flowers", where=plain)[0]
        assert [r["item_id"] for r in got["results"]] == [r["item_id"] for r in want["results"]], where
        assert got["passing"] == want["passing"] > 0 and got["where"] == where
        page = client.get("/items", params={"where": where, "task": "flowers", "limit": 500}).json()
        plain_page = client.get("/items", params={"where": plain, "task": "flowers", "limit": 500}).json()
        assert page["total"] == plain_page["total"] > 0 and page["items"] == plain_page["items"], where
        r = run("search", "--id", "1", "-k", "5", "--task", "flowers", "--where", where, "--store", store, "--json")
        assert r.exit_code == 0


def test_what_runs_is_the_checked_tree_not_the_text():
    from featstore.store.where_guard import check_where

    checked = check_where("label = 'x' -- ) OR (true")
    assert "--" not in checked.sql and "true" not in checked.sql and checked.text == "label = 'x' -- ) OR (true"
    assert check_where(checked) is checked
    with pytest.raises(Exception, match="is text .SQL., not int"):
        check_where(42)


def test_a_filter_runs_with_files_network_and_settings_locked(store):
    import duckdb

    from featstore.store.db import Store

    with Store.open(store) as st:
        con = st.filter_con
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        for setting in ("SET enable_external_access = true", "SET memory_limit = '100GB'", "SET threads = 8"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(setting)
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("953")   # 1 GB
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE store.x (a INT)")


def test_a_filter_past_the_time_limit_is_interrupted(store):
    """The time limit interrupts DuckDB mid-query (a query over 10^9 rows, a 0.2 s limit), with a one-line error
    naming the condition; the connection answers the next filter as usual."""
    import time

    from featstore.store import filter_run
    from featstore.store.db import Store
    from featstore.store.where_guard import check_where

    where = check_where("label = 'roses'")
    with Store.open(store) as st:
        started = time.monotonic()
        with pytest.raises(filter_run.FilterTimeout, match=r"^where \"label = 'roses'\": stopped after 0.2 s"):
            filter_run.run_filter(st.filter_con, where, "SELECT count(*) FROM range(1000000000) r WHERE r % 7 = 3",
                                  {}, seconds=0.2)
        assert time.monotonic() - started < 5
        assert st.passing_rows(where, "flowers", "SELECT count(*) FROM {items}") == [(20,)]
