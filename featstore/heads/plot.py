"""Figures of a fit, in scikit-learn's display style (matplotlib, loaded only here and only when asked): the
held-out confusion matrix (counts, or rows normalised), the few-shot learning curve, and predicted against
actual for a numeric target. Each function returns the matplotlib Figure; `plot_fit` also writes it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plot_io import check_plot_path, new_figure, save_figure

MAX_VALUES = 30            # confusion matrices with more classes than this are drawn without numbers in the cells
MAX_POINTS = 2000          # prediction-error plots draw at most this many held-out items (a seeded sample)


def confusion_figure(confusion: dict, title: str, normalize: bool = False):
    """Rows true, columns predicted. Counts, or with `normalize` each row divided by its total (the share of a
    true class given each label: the diagonal is the recall). Title: what, held-out accuracy and n."""
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = list(confusion["labels"])
    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    n = int(counts.sum())
    accuracy = float(np.trace(counts)) / n if n else 0.0
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        matrix = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    else:
        matrix = counts
    side = min(max(4.8, 0.55 * len(labels) + 3.0), 20.0)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    cell_inches = side * 0.75 / max(len(labels), 1)
    rotate = "horizontal" if max((len(s) for s in labels), default=0) * 0.08 <= cell_inches else "vertical"
    disp = ConfusionMatrixDisplay(matrix, display_labels=labels)
    disp.plot(ax=ax, cmap="Blues", colorbar=True, include_values=len(labels) <= MAX_VALUES,
              values_format=".2f" if normalize else "d", xticks_rotation=rotate,
              im_kw={"vmin": 0, "vmax": 1} if normalize else {"vmin": 0})
    disp.im_.colorbar.set_label("share of the true class" if normalize else "held-out items")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    what = "rows normalised (diagonal = recall)" if normalize else "counts"
    ax.set_title(f"{title}\nheld-out accuracy {100 * accuracy:.1f}% (n = {n}), {what}", fontsize=11)
    return fig


def curve_figure(curve: dict):
    """Few-shot learning curve: mean held-out accuracy against labelled examples per class (log axis), with the
    spread of the seeded draws as bands, the whole training part and chance as reference lines."""
    from matplotlib.ticker import NullFormatter, PercentFormatter

    rows = [r for r in curve["rows"] if r["shots"] != "all"]
    full = next((r for r in curve["rows"] if r["shots"] == "all"), None)
    x = np.array([r["shots"] for r in rows], dtype=float)
    mean = np.array([r["accuracy_mean"] for r in rows])
    std = np.array([r["accuracy_std"] for r in rows])
    lo, hi = np.array([r["accuracy_min"] for r in rows]), np.array([r["accuracy_max"] for r in rows])
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    draws = curve["seeds"]
    ax.fill_between(x, lo, hi, color="C0", alpha=0.15, linewidth=0,
                    label=f"min-max over {draws} seeded draws")
    ax.fill_between(x, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color="C0", alpha=0.3, linewidth=0,
                    label="mean ± 1 sd")
    if len(x) == 1:             # a band needs two points: show the one point's spread as a bar
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="C0", capsize=4)
    ax.plot(x, mean, "o-", color="C0", label=f"mean held-out accuracy ({curve['kind']})")
    if full is not None:
        ax.axhline(full["accuracy_mean"], color="C2", linestyle="--",
                   label=f"whole training part: {100 * full['accuracy_mean']:.1f}%")
    ax.axhline(curve["chance"], color="grey", linestyle=":", label=f"chance: {100 * curve['chance']:.0f}%")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled examples per class (log scale)")
    ax.set_ylabel(f"held-out accuracy (n = {curve['n_test']})")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(f"few-shot learning curve: task {curve['task']!r}\n{curve['kind']} on {curve['model']} features, "
                 f"{len(curve.get('classes') or [])} classes", fontsize=11)
    return fig


def prediction_error_figure(y_true, y_pred, title: str):
    """Predicted (x) against actual (y) for each held-out item, with the diagonal of perfect predictions;
    held-out R^2, MAE and n in the title (scikit-learn's PredictionErrorDisplay)."""
    from sklearn.metrics import PredictionErrorDisplay, mean_absolute_error, r2_score

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    fig = new_figure(6.2, 5.6)
    ax = fig.add_subplot()
    PredictionErrorDisplay.from_predictions(
        y_true, y_pred, kind="actual_vs_predicted", ax=ax, subsample=MAX_POINTS, random_state=0,
        scatter_kwargs={"alpha": 0.6, "label": "held-out item"},
        line_kwargs={"label": "perfect prediction (actual = predicted)"})
    from matplotlib.ticker import AutoLocator

    ax.xaxis.set_major_locator(AutoLocator())            # round ticks, not the display's evenly spaced ones
    ax.yaxis.set_major_locator(AutoLocator())
    ax.set_xlabel("predicted value")
    ax.set_ylabel("actual value")
    ax.legend(loc="upper left", fontsize=9)
    shown = "" if len(y_true) <= MAX_POINTS else f", {MAX_POINTS} drawn"
    ax.set_title(f"{title}\nheld-out R² {r2_score(y_true, y_pred):.3f}, MAE {mean_absolute_error(y_true, y_pred):.4g} "
                 f"(n = {len(y_true)}{shown})", fontsize=11)
    return fig


def held_out_predictions(store, head: str, data) -> dict:
    """The stored head's predictions on the task's held-out items (what the prediction-error plot draws)."""
    from .storage import load_head

    X_te, y_te = data.held_out
    return {"y_true": np.asarray(y_te, float), "y_pred": load_head(store, head)[0].run(X_te)[:, 0]}


def plot_fit(out: dict, path: str | Path, curve: bool = False, normalize: bool = False,
             predictions: dict | None = None):
    """Write the figure of a fit to `path` (.png, .svg or .pdf) and return it: the few-shot curve, the head's
    (a leaderboard: the best head's) confusion matrix, or for a numeric target predicted against actual (from
    `predictions`, see held_out_predictions)."""
    check_plot_path(path)
    if curve:
        save_figure(fig := curve_figure(out), path)
        return fig
    best = out["rows"][0] if "rows" in out else None
    name, kind = (best["head"], best["kind"]) if best else (out["name"], out["kind"])
    what = f"head {name!r} ({kind}{', best of the leaderboard' if best else ''})"
    if predictions is not None:
        fig = prediction_error_figure(predictions["y_true"], predictions["y_pred"],
                                      f"{what} on task {out['task']!r}: predicted vs actual")
    else:
        confusion = best["confusion"] if best else out["metrics"]["confusion"]
        fig = confusion_figure(confusion, f"{what} on task {out['task']!r}", normalize=normalize)
    save_figure(fig, path)
    return fig
