"""Text tables, embedded for real with MiniLM: an unclosed CSV quote, a JSON line without the text key, and a
`label` column used by default."""
import json

from conftest import query


def _json(result):
    return json.loads(result.stdout)


def test_unclosed_csv_quote_fails_its_row_and_keeps_the_rows_before(run, tmp_path):
    (tmp_path / "t.csv").write_text("id,text\n1,\"Rain is expected across the north.\"\n"
                                    "2,The team won the cup final.\n3,\"The budget was set out to parliament.\n"
                                    "4,Shares fell on the stock market.\n")
    store = tmp_path / "store"
    out = _json(run("embed", tmp_path / "t.csv", "--store", store, "--json"))
    key = str(tmp_path / "t.csv")
    assert out["embedded"] == 2 and out["failed"] == 1, out
    assert out["failures"] == [[f"{key}#3", "line 4: unclosed quote (it runs to the end of the file, so no row "
                                            "after it was read)"]]
    assert query(store, "SELECT path FROM items WHERE status = 'ok' ORDER BY path") == [(f"{key}#1",), (f"{key}#2",)]
    human = run("embed", tmp_path / "t.csv", "--store", store, "--retry-failed").output
    assert f"failed: {key}#3: line 4: unclosed quote" in human


def test_jsonl_line_without_the_text_key_says_so(run, tmp_path):
    lines = [json.dumps({"text": "Rain is expected across the north."}), json.dumps({"text": "  "}),
             json.dumps({"body": "The team won the cup final."})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    out = _json(run("embed", tmp_path / "t.jsonl", "--store", store, "--json"))
    key = str(tmp_path / "t.jsonl")
    assert out["embedded"] == 1 and out["failed"] == 2, out
    assert dict(map(tuple, out["failures"])) == {f"{key}#2": "empty text", f"{key}#3": "line 3: no 'text' key"}


def test_a_label_column_gives_labels_by_default(run, tmp_path):
    (tmp_path / "t.csv").write_text("text,label,topic\nRain is expected across the north.,weather,a\n"
                                    "The team won the cup final.,sport,b\n")
    store = tmp_path / "store"
    out = _json(run("embed", tmp_path / "t.csv", "--store", store, "--json"))
    key = str(tmp_path / "t.csv")
    assert out["task"] == "t" and out["labelled"] == 2, out
    assert query(store, "SELECT path, label FROM labels WHERE task = 't' ORDER BY path") == [
        (f"{key}#1", "weather"), (f"{key}#2", "sport")]
    out = _json(run("embed", tmp_path / "t.csv", "--label-column", "topic", "--task", "topics", "--store", store,
                    "--json"))
    assert out["task"] == "topics" and out["labelled"] == 2
    assert query(store, "SELECT label FROM labels WHERE task = 'topics' ORDER BY path") == [("a",), ("b",)]
