"""Plots of fits and audits on a real store (the bundled flowers embedded by `featstore embed`: real ONNX Runtime,
FAISS, DuckDB): files in every format, what the figures say (read from the matplotlib objects the library
returns, not from pixels), the leaderboard's intervals, and one-line errors for a bad extension or no matplotlib."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import embed_into_new_store, query

ROOT = Path(__file__).parents[1]
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, home):
    """The bundled sample (100 photos, 5 classes) embedded once, with a numeric task: each photo's brightness."""
    path = embed_into_new_store(tmp_path_factory, "plots")
    rows = query(path, "SELECT path, hash FROM items WHERE status = 'ok' ORDER BY path")
    csv = path.parent / "bright.csv"
    csv.write_text("hash,label\n" + "".join(
        f"{h},{float(np.asarray(Image.open(p).convert('L'), np.float32).mean()):.3f}\n" for p, h in rows))
    from conftest import cli_runner

    cli_runner()("label", "--task", "brightness", "--csv", csv, "--store", path)
    return path


def _json(result):
    return json.loads(result.stdout)


def _is(path: Path, fmt: str) -> bool:
    head = path.read_bytes()[:400]
    if fmt == "svg":
        return head.startswith(b"<?xml") and b"<svg" in head
    return head.startswith(MAGIC[fmt])


def _stored_heads(store) -> set[str]:
    return {r[0] for r in query(store, "SELECT name FROM heads")}


def _task(store, task: str):
    from featstore.heads.fit import load_task
    from featstore.store.db import Store

    with Store.open(store, write=True) as st:
        return load_task(st, task)


# ---- confusion matrix ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_confusion_matrix_is_written_in_the_format_its_extension_names(run, store, tmp_path, fmt):
    out = tmp_path / f"cm.{fmt}"
    r = run("fit-head", "--task", "flowers", "--name", f"cm-{fmt}", "--plot", out, "--store", store)
    assert f"plot written to {out}" in r.output
    assert _is(out, fmt), out.read_bytes()[:20]
    assert not any(_is(out, other) for other in ("png", "svg", "pdf") if other != fmt)


def test_confusion_matrix_title_counts_colour_bar_and_normalised_rows(run, store, tmp_path):
    from featstore.heads.plot import confusion_figure, plot_fit

    out = _json(run("fit-head", "--task", "flowers", "--name", "cm-title", "--store", store, "--json"))
    m = out["metrics"]
    fig = plot_fit(out, tmp_path / "cm.png")
    ax, bar = fig.axes                                                  # the matrix and its colour bar
    title = ax.get_title()
    assert f"{100 * m['test_accuracy']:.1f}%" in title and f"n = {m['n_test']}" in title, title
    assert "'cm-title'" in title and "counts" in title
    counts = np.asarray(ax.images[0].get_array())
    assert (counts == np.asarray(m["confusion"]["matrix"])).all() and counts.sum() == m["n_test"]
    cells = {t.get_text() for t in ax.texts}
    assert {str(v) for v in counts.ravel()} <= cells                   # every count is written in its cell
    assert bar.get_ylabel() == "held-out items"
    assert [t.get_text() for t in ax.get_xticklabels()] == m["confusion"]["labels"]

    r = run("fit-head", "--task", "flowers", "--name", "cm-norm", "--plot", tmp_path / "n.png", "--plot-normalize",
            "--store", store)
    assert "plot written to" in r.output and _is(tmp_path / "n.png", "png")
    fig = confusion_figure(m["confusion"], "normalised", normalize=True)
    ax = fig.axes[0]
    rates = np.asarray(ax.images[0].get_array())
    assert np.allclose(rates.sum(axis=1), 1.0)
    assert np.allclose(np.diag(rates), [m["per_class"][c]["recall"] for c in m["confusion"]["labels"]])
    assert "rows normalised" in ax.get_title() and f"n = {m['n_test']}" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "share of the true class"


def test_leaderboard_plots_its_best_head(run, store, tmp_path):
    out = _json(run("fit-head", "--task", "flowers", "--kind", "all", "--name", "lbp", "--plot", tmp_path / "b.svg",
                    "--store", store, "--json"))
    assert _is(tmp_path / "b.svg", "svg")
    from featstore.heads.plot import plot_fit

    title = plot_fit(out, tmp_path / "again.pdf").axes[0].get_title()
    assert f"'{out['rows'][0]['head']}'" in title and "best of the leaderboard" in title
    assert f"{100 * out['rows'][0]['value']:.1f}%" in title and _is(tmp_path / "again.pdf", "pdf")


# ---- few-shot curve -----------------------------------------------------------------------------------------------
def test_few_shot_curve_log_axis_and_explained_bands(run, store, tmp_path):
    from matplotlib.collections import PolyCollection

    from featstore.heads.plot import curve_figure

    out = _json(run("fit-head", "--task", "flowers", "--shots", "1,2,5", "--seeds", "3", "--plot",
                    tmp_path / "curve.pdf", "--store", store, "--json"))
    assert _is(tmp_path / "curve.pdf", "pdf")
    ax = curve_figure(out).axes[0]
    assert ax.get_xscale() == "log"
    assert "per class" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
    bands = {c.get_label(): c for c in ax.collections if isinstance(c, PolyCollection)}
    assert set(bands) == {"min-max over 3 seeded draws", "mean ± 1 sd"}, set(bands)
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert set(bands) <= legend and any(t.startswith("chance") for t in legend)
    ys = bands["min-max over 3 seeded draws"].get_paths()[0].vertices[:, 1]
    rows = out["rows"][:3]
    assert np.isclose(ys.min(), min(r["accuracy_min"] for r in rows))
    assert np.isclose(ys.max(), max(r["accuracy_max"] for r in rows))
    mean_line = next(line for line in ax.get_lines() if line.get_label().startswith("mean held-out accuracy"))
    assert np.allclose(mean_line.get_xdata(), [1, 2, 5])
    assert np.allclose(mean_line.get_ydata(), [r["accuracy_mean"] for r in rows])


# ---- numeric target --------------------------------------------------------------------------------------------
def test_prediction_error_plot_for_a_numeric_target(run, store, tmp_path):
    from featstore.heads.plot import held_out_predictions, prediction_error_figure
    from featstore.store.db import Store

    out = _json(run("fit-head", "--task", "brightness", "--kind", "ridge", "--name", "pe", "--plot",
                    tmp_path / "pe.png", "--store", store, "--json"))
    assert _is(tmp_path / "pe.png", "png")
    m = out["metrics"]
    data = _task(store, "brightness")
    with Store.open(store) as st:
        points = held_out_predictions(st, "pe", data)
    assert len(points["y_true"]) == m["n_test"]
    ax = prediction_error_figure(points["y_true"], points["y_pred"], "pe").axes[0]
    title = ax.get_title()
    assert f"R² {m['test_r2']:.3f}" in title and f"MAE {m['test_mae']:.4g}" in title and f"n = {m['n_test']}" in title
    assert ax.get_xlabel() == "predicted value" and ax.get_ylabel() == "actual value"
    diagonal = next(line for line in ax.get_lines() if "perfect prediction" in line.get_label())
    x, y = diagonal.get_xdata(), diagonal.get_ydata()
    assert np.allclose(x, y) and x.min() <= points["y_true"].min() and x.max() >= points["y_true"].max()
    scatter = ax.collections[0].get_offsets()
    assert np.allclose(np.sort(scatter[:, 0]), np.sort(points["y_pred"]))

    r = run("fit-head", "--task", "brightness", "--kind", "ridge", "--name", "pe2", "--plot", tmp_path / "x.png",
            "--plot-normalize", "--store", store, ok=False)
    assert r.exit_code == 1 and "numeric target" in r.output and len(r.output.strip().splitlines()) == 1


# ---- leaderboard intervals --------------------------------------------------------------------------------------
def _wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_leaderboard_intervals_and_the_within_noise_statement(run, store):
    r = run("fit-head", "--task", "flowers", "--kind", "all", "--name", "ci", "--store", store)
    out = _json(run("fit-head", "--task", "flowers", "--kind", "all", "--name", "ci", "--force", "--store", store,
                    "--json"))
    assert out["ci_level"] == 0.95
    for row in out["rows"]:
        assert row["ci_method"] == "wilson" and row["ci_low"] <= row["value"] <= row["ci_high"]
        low, high = _wilson(row["value"], out["n_test"])
        assert np.isclose(row["ci_low"], low) and np.isclose(row["ci_high"], high)
    first, second = out["rows"][:2]
    verdict = out["verdict"]
    assert verdict["leader"] == first["kind"] and verdict["runner_up"] == second["kind"]
    assert verdict["within_noise"] == (second["value"] >= first["ci_low"])
    assert ("not a clear winner" in verdict["statement"]) == verdict["within_noise"]
    assert np.isclose(verdict["gap"], 100 * (first["value"] - second["value"]))
    # the printed table: an interval column and the verdict (the fit is seeded: same numbers as --json)
    assert "95% interval" in r.output and verdict["statement"] in r.output
    assert f"{100 * first['ci_low']:.1f}% - {100 * first['ci_high']:.1f}%" in r.output


def test_leader_verdict_both_ways():
    from featstore.heads.intervals import interval_fields, leader_verdict

    def row(kind, value, n):
        return {"kind": kind, "metric": "accuracy", "value": value, **interval_fields("accuracy", value, n)}

    close = leader_verdict([row("logreg", 0.90, 180), row("svm", 0.89, 180)])
    assert close["within_noise"] and close["statement"] == ("logreg leads svm by 1.0 points, within the 95% "
                                                            "interval: not a clear winner")
    clear = leader_verdict([row("logreg", 0.95, 2000), row("knn", 0.80, 2000)])
    assert not clear["within_noise"] and "a clear winner" in clear["statement"]
    assert leader_verdict([row("logreg", 0.9, 10)]) is None


def test_numeric_leaderboard_has_bootstrap_intervals(run, store):
    out = _json(run("fit-head", "--task", "brightness", "--kind", "all", "--name", "bci", "--store", store,
                    "--json"))
    for row in out["rows"]:
        assert row["metric"] == "r2" and row["ci_method"] == "bootstrap"
        assert row["ci_low"] < row["value"] < row["ci_high"]
    v = out["verdict"]
    assert v["within_noise"] == (out["rows"][1]["value"] >= out["rows"][0]["ci_low"]) and "R^2" in v["statement"]


# ---- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["fit-head", "--task", "flowers", "--name", "bad", "--plot", "{tmp}/cm.jpg"],
    ["fit-head", "--task", "flowers", "--shots", "1,2", "--plot", "{tmp}/curve"],
    ["audit", "--task", "flowers", "--sheet", "{tmp}/sheet.gif"],
])
def test_a_bad_extension_is_one_line_before_any_work(run, store, tmp_path, args):
    before = _stored_heads(store)
    r = run(*[a.format(tmp=tmp_path) for a in args], "--store", store, ok=False)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "unknown figure type" in lines[0] and ".png, .svg or .pdf" in lines[0]
    assert _stored_heads(store) == before and not list(tmp_path.iterdir())


BLOCKED = """
import sys
sys.modules["matplotlib"] = None          # `import matplotlib` raises ImportError, as when it is not installed
from featstore.cli.main import main
sys.argv = ["featstore"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("args", [
    ["fit-head", "--task", "flowers", "--name", "nompl", "--plot", "{tmp}/cm.png"],
    ["audit", "--task", "flowers", "--sheet", "{tmp}/sheet.png"],
])
def test_without_matplotlib_a_plot_is_one_line_naming_the_extra(store, tmp_path, args):
    before = _stored_heads(store)
    r = subprocess.run([sys.executable, "-c", BLOCKED, *[a.format(tmp=tmp_path) for a in args], "--store",
                        str(store)], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stdout + r.stderr
    assert "pip install 'featstore[plots]'" in lines[0]
    assert _stored_heads(store) == before and not list(tmp_path.iterdir())


# ---- audit contact sheet ----------------------------------------------------------------------------------------
def test_audit_contact_sheet_is_legible_and_titled(run, store, tmp_path):
    import featstore
    from featstore.apps.contact_sheet import contact_sheet, sheet_figure

    result = featstore.open(store).audit("flowers", sheet=tmp_path / "sheet.png")
    report = dict(result)
    assert _is(tmp_path / "sheet.png", "png") and report["sheet"]["tiles"] >= 8
    for fmt in ("svg", "pdf"):
        assert contact_sheet(report, tmp_path / f"s.{fmt}")["sheet"] == str(tmp_path / f"s.{fmt}")
        assert _is(tmp_path / f"s.{fmt}", fmt)

    fig = sheet_figure(report)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    texts = [t for t in fig.texts + [t for ax in fig.axes for t in ax.texts] if t.get_text()]
    title = texts[0].get_text()
    assert "audit of task 'flowers'" in title and report["set_id"] in title and report["model"] in title
    assert all(t.get_fontsize() * fig.dpi / 72 >= 10 for t in texts)            # >= 10 px at 100% zoom
    boxes = [t.get_window_extent(renderer) for t in texts]
    width, height = fig.get_size_inches() * fig.dpi
    for i, a in enumerate(boxes):
        assert 0 <= a.x0 and a.x1 <= width and 0 <= a.y0 and a.y1 <= height, texts[i].get_text()
        for j in range(i):
            assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    for ax in fig.axes:                                                            # thumbnails never cover text
        for b in boxes:
            assert not ax.get_window_extent(renderer).overlaps(b)
    captions = " | ".join(t.get_text() for t in texts)
    for issue in report["label_issues"][:8]:
        assert f"#{issue['item_id']}  score {issue['score']:.2f}" in captions
        assert f"given: {issue['given']}" in captions and f"suggested: {issue['suggested']}" in captions
    for outlier in report["outliers"][:8]:
        assert f"#{outlier['item_id']}  uniq. {outlier['score']:.2f}" in captions
