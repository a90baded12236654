"""User errors from the CLI are one line, never a traceback; commands that only read never create a store; predict
reports unusable files one by one; library logs (faiss, Ray) stay out of the terminal unless --verbose.

Every command and subcommand is enumerated from the click group, so a command added later is covered too."""
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from conftest import SAMPLE

from featstore.cli.main import cli

PHOTO = SAMPLE / "roses" / "10090824183_d02c613f10_m.jpg"
CREATES_A_STORE = {"embed"}      # the commands that may make a store where there is none


def leaf_commands(group: click.Group = cli, prefix: tuple = ()):
    """(name words, command) for every command under the group, subgroups walked (a group that runs by itself,
    like `heads`, counts as a command too)."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:
                yield prefix + (name,), cmd
            yield from leaf_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


STORE_COMMANDS = [words for words, cmd in leaf_commands() if any(p.name == "store_path" for p in cmd.params)]
EXTRA_ARGS = {("search",): ["--id", "1"],      # a query is needed, though no single option is required
              ("label",): ["--set", "x", "--ids", "1"],   # what to set and on which items: one way of several
              ("tag",): ["--ids", "1"], ("exclude",): ["--ids", "1"], ("include",): ["--ids", "1"]}


def _value(param: click.Parameter, csv_file) -> str:
    """A well-formed value for a required parameter, so that the command gets as far as opening the store."""
    t = param.type
    if isinstance(t, click.Path) and t.exists:
        return str(SAMPLE) if t.dir_okay else str(csv_file)
    if isinstance(param, click.Argument) and param.nargs == -1:
        return str(PHOTO)
    if isinstance(t, click.Choice):
        return t.choices[0]
    if isinstance(t, click.types.IntParamType):
        return "5"
    return "x.onnx" if isinstance(t, click.Path) else "x"


def args_for(words: tuple, csv_file) -> list[str]:
    cmd = dict(leaf_commands())[words]
    args = list(words)
    for p in cmd.params:
        if p.required:
            args += [p.opts[0], _value(p, csv_file)] if isinstance(p, click.Option) else [_value(p, csv_file)]
    return args + EXTRA_ARGS.get(words, [])


@pytest.fixture
def quiet_home(tmp_path, monkeypatch):
    """An empty featstore home and an empty working folder: nothing is exported, nothing lands in the tests'."""
    monkeypatch.setenv("FEATSTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEATSTORE_STORE", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(f"path,label\n{PHOTO},roses\n")
    return work, csv_file


def invoke(args, **kw):
    """The CLI in-process; an uncaught exception propagates (fails the test) instead of becoming exit code 1."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def test_every_store_command_is_enumerated():
    names = {" ".join(w) for w in STORE_COMMANDS}
    assert {"embed", "fit-head", "predict", "export", "search", "stats", "heads", "duplicates", "verify", "gc",
            "label", "index build", "heads remove"} <= names


@pytest.mark.parametrize("how", ["--store", "FEATSTORE_STORE"])
@pytest.mark.parametrize("words", STORE_COMMANDS, ids=" ".join)
def test_a_file_as_store_is_one_clear_line(quiet_home, monkeypatch, words, how):
    work, csv_file = quiet_home
    not_a_store = work / "some-file"
    not_a_store.write_bytes(b"my notes, not a store\n")
    args = args_for(words, csv_file)
    if how == "--store":
        args += ["--store", str(not_a_store)]
    else:
        monkeypatch.setenv("FEATSTORE_STORE", str(not_a_store))
    r = invoke(args)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(not_a_store) in lines[0] and "is a file" in lines[0], r.stderr
    assert not_a_store.read_bytes() == b"my notes, not a store\n"
    assert os.listdir(work) == ["some-file"]


def test_featstore_store_file_embed_prints_no_traceback(quiet_home):
    """The reported case, as a user runs it: a real process, FEATSTORE_STORE naming a regular file."""
    work, _ = quiet_home
    (work / "some-file").write_text("x")
    env = dict(os.environ, FEATSTORE_STORE="some-file")
    p = subprocess.run([sys.executable, "-m", "featstore.cli.main", "embed", str(SAMPLE), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "Error: some-file: not a store: it is a file, and a store is a folder (point --store / FEATSTORE_STORE at "
        "a store folder, or at a new one to create)"]


@pytest.mark.parametrize("words", [w for w in STORE_COMMANDS if w[0] not in CREATES_A_STORE], ids=" ".join)
def test_commands_other_than_embed_create_no_store(quiet_home, words):
    """In an empty folder, readers and writers that need a store (fit-head, predict, label, gc, index build...)
    say there is none, and leave nothing behind."""
    work, csv_file = quiet_home
    r = invoke(args_for(words, csv_file))
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [
        "Error: no featstore store at .featstore (run `featstore embed FOLDER` first, or point --store / "
        "FEATSTORE_STORE at one)"]
    assert os.listdir(work) == []


def test_stats_of_an_empty_store(quiet_home):
    from featstore.store.db import Store

    work, _ = quiet_home
    Store.open(work / "s", write=True, create=True).close()
    r = invoke(["stats", "--store", work / "s"])
    assert r.exit_code == 0, r.output
    assert "items: none; 0 distinct contents, 0 duplicate paths" in r.stdout
    assert "items: ;" not in r.stdout and "embedding sets: none yet" in r.stdout


# ---- predict: one unusable file is one failed row, not the end of the batch ----------------------------------------
@pytest.fixture(scope="module")
def head_store(tmp_path_factory, home):
    """40 real photos embedded, a k-NN head fitted on them."""
    import shutil

    from conftest import embed_into_new_store, sample_images

    folder = tmp_path_factory.mktemp("predict") / "flowers"
    for p in sample_images(8):
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.parent.name / p.name)
    store = embed_into_new_store(tmp_path_factory, "predict-store", folder)
    r = invoke(["fit-head", "--task", "flowers", "--head", "knn", "--store", store])
    assert r.exit_code == 0, r.output
    return store


def test_predict_reports_unusable_files_per_file(run, head_store, tmp_path):
    import json

    from conftest import query

    good = sorted((SAMPLE.parent.parent.parent / "featstore" / "data" / "parity").glob("*.jpg"))[:2]
    missing, corrupt, dangling = tmp_path / "missing.jpg", tmp_path / "corrupt.jpg", tmp_path / "dangling.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dangling.symlink_to(tmp_path / "gone.jpg")
    r = run("predict", "--head", "flowers", *good[:1], missing, corrupt, dangling, *good[1:], "--json", "--add",
            "--store", head_store)
    rows = json.loads(r.stdout)["predictions"]
    assert [row["path"] for row in rows] == [str(p) for p in (good[0], missing, corrupt, dangling, good[1])]
    assert [row["status"] for row in rows] == ["ok", "failed", "failed", "failed", "ok"]
    classes = {"daisy", "dandelion", "roses", "sunflowers", "tulips"}
    assert all(rows[i]["label"] in classes and 0 < rows[i]["probability"] <= 1 for i in (0, 4))
    assert rows[1]["error"] == "no such file" and rows[2]["error"].startswith("cannot decode image")
    assert rows[3]["error"].startswith("cannot stat file")
    # a path that does not exist is not recorded in the store; the two photos are kept, as predict --add does
    stored = {p for (p,) in query(head_store, "SELECT path FROM items")}
    assert str(missing) not in stored and {str(good[0]), str(good[1])} <= stored


def test_predict_exits_1_only_when_no_file_could_be_predicted(run, head_store, tmp_path):
    r = run("predict", "--head", "flowers", tmp_path / "missing.jpg", tmp_path / "also-missing.jpg", "--csv",
            "--store", head_store, ok=False)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == ["Error: no file could be predicted (each row says why)"]
    assert r.stdout.splitlines()[1:] == [f"{tmp_path / 'missing.jpg'},,,,failed,no such file",
                                         f"{tmp_path / 'also-missing.jpg'},,,,failed,no such file"]


# ---- library logs stay out of the terminal unless --verbose -------------------------------------------------------
def test_ivf_build_prints_no_faiss_warning_unless_verbose(run, head_store, capfd):
    """faiss warns from C++ straight to file descriptor 2 when an IVF list gets fewer than 39 training points
    (40 vectors, 16 lists here): captured at the descriptor, not just sys.stderr."""
    capfd.readouterr()
    r = run("index", "build", "--kind", "ivf", "--store", head_store)
    assert "ivf index over" in r.stdout
    err = capfd.readouterr().err + r.stderr
    assert "WARNING clustering" not in err and "please provide at least" not in err
    run("--verbose", "index", "build", "--kind", "ivf", "--store", head_store)
    assert "WARNING clustering" in capfd.readouterr().err          # the same build, with the library's lines


def test_ray_engine_prints_no_ray_lines(home, tmp_path):
    """A real `featstore embed --engine ray` process (it starts its own local Ray): none of Ray's lines on stderr
    (token notice, core_worker.cc's actor-restart caveat, the C++ logger's "Set ray log level" line at start, Ray
    Data's notices), only featstore's own."""
    import shutil

    pytest.importorskip("ray")
    from conftest import sample_images

    folder = tmp_path / "f"
    for p in sample_images(2)[:6]:
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.parent.name / p.name)
    env = dict(os.environ, FEATSTORE_HOME=str(home))
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    p = subprocess.run([sys.executable, "-m", "featstore.cli.main", "embed", str(folder), "--store",
                        str(tmp_path / "s"), "--engine", "ray", "--workers", "1", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr
    assert "embedded now (backbone ran)                     6" in p.stdout
    lines = p.stderr.splitlines()
    assert lines == ["1 shards of up to 1000 files: 0 ingested before, 0 unchanged, 0 staged by an earlier run (not "
                     "recomputed), 1 to compute"], p.stderr
