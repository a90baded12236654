"""What fit_head, search and audit return: the very dicts the CLI prints as JSON (so `result["metrics"]` and
`json.dumps(result)` are as before), with `to_pandas()` for a table and a short readable repr."""
from __future__ import annotations


class Result(dict):
    """A verb's result dict with a table view (to_pandas) and a one-glance repr."""

    def to_dict(self) -> dict:
        """A plain dict (shallow copy)."""
        return dict(self)

    def to_pandas(self):
        """The result as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self._records(), columns=self._columns())

    def _records(self) -> list[dict]:
        raise NotImplementedError

    def _columns(self) -> list[str] | None:
        return None

    def _repr_pretty_(self, p, cycle) -> None:     # IPython / Jupyter: the same short form, not the whole dict
        p.text(repr(self))


class FitResult(Result):
    """fit_head's result. to_pandas: a leaderboard (head='all'), a few-shot curve (shots=), or one head's
    held-out metrics per class (regression: one row)."""

    def _mode(self) -> str:
        return "head" if "rows" not in self else "curve" if "seeds" in self else "leaderboard"

    def _records(self) -> list[dict]:
        if self._mode() == "curve":
            return list(self["rows"])
        if self._mode() == "leaderboard":
            return [{"head": r["head"], "kind": r["kind"], "metric": r["metric"], "value": r["value"],
                     "fit_seconds": r["fit_seconds"], "predictions_per_second": r["predictions_per_second"],
                     "chosen": ", ".join(f"{k}={v:g}" for k, v in r["chosen"].items() if k and v is not None)}
                    for r in self["rows"]]
        m = self["metrics"]
        if self["task_type"] == "regression":
            return [{"head": self["name"], "kind": self["kind"], "n_train": m["n_train"], "n_test": m["n_test"],
                     "r2": m["test_r2"], "mae": m["test_mae"], "rmse": m["test_rmse"]}]
        return [{"class": c, **v} for c, v in m["per_class"].items()]

    def _columns(self) -> list[str] | None:
        if self._mode() == "curve":
            return ["shots", "runs", "accuracy_mean", "accuracy_std", "accuracy_min", "accuracy_max",
                    "capped_by_class_size"]
        if self._mode() == "leaderboard":
            return ["head", "kind", "metric", "value", "fit_seconds", "predictions_per_second", "chosen"]
        if self["task_type"] == "regression":
            return ["head", "kind", "n_train", "n_test", "r2", "mae", "rmse"]
        return ["class", "precision", "recall", "f1", "support"]

    def __repr__(self) -> str:
        if self._mode() == "curve":
            last = self["rows"][-1]
            return (f"FitResult(few-shot curve of {self['kind']} on task {self['task']!r}: {len(self['rows'])} "
                    f"points, all training items {last['accuracy_mean']:.3f} held-out accuracy)")
        if self._mode() == "leaderboard":
            best = self["rows"][0] if self["rows"] else None
            top = (f"; best {best['head']!r} ({best['kind']}) {best['metric']} {best['value']:.3f}"
                   if best and best["value"] is not None else "")
            return (f"FitResult(leaderboard of {len(self['rows'])} heads for task {self['task']!r}, "
                    f"{self['n_train']} train / {self['n_test']} held-out{top})")
        m = self["metrics"]
        score = (f"held-out R^2 {m['test_r2']:.3f}" if self["task_type"] == "regression"
                 else f"held-out accuracy {m['test_accuracy']:.3f}")
        return (f"FitResult(head {self['name']!r} ({self['kind']}) for task {self['task']!r} on {self['model']}: "
                f"{score}, {m['n_train']} train / {m['n_test']} held-out)")


SEARCH_COLUMNS = ["query", "rank", "score", "item_id", "path", "label"]


def search_columns(results) -> list[str]:
    """The table's columns: `text` too where a neighbour is a text item."""
    return SEARCH_COLUMNS + (["text"] if any(r.get("text") for out in results for r in out["results"]) else [])


class SearchResult(Result):
    """One query's neighbours. to_pandas: one row per neighbour (query, rank, score, item_id, path, label, and
    text for text items)."""

    def _records(self) -> list[dict]:
        return [{"query": self["query"], **{c: r.get(c) for c in SEARCH_COLUMNS[1:]}, "text": r.get("text")}
                for r in self["results"]]

    def _columns(self) -> list[str]:
        return search_columns([self])

    def __repr__(self) -> str:
        lines = [f"SearchResult({len(self['results'])} nearest to {self['query']!r}, {self['model']})"]
        lines += [f"  {r['rank']:>3}  {r['score']:.4f}  {r.get('label') or '-'}  {r['path']}"
                  for r in self["results"][:5]]
        if len(self["results"]) > 5:
            lines.append(f"  ... {len(self['results']) - 5} more (to_pandas() for all)")
        return "\n".join(lines)


class SearchResults(list):
    """A batch of queries: a list of SearchResult. to_pandas: one row per (query, neighbour)."""

    def to_pandas(self):
        """All the queries' neighbours in one DataFrame, one row per (query, neighbour)."""
        import pandas as pd

        return pd.DataFrame([row for r in self for row in r._records()], columns=search_columns(self))

    def __repr__(self) -> str:
        n = sum(len(r["results"]) for r in self)
        return f"SearchResults({len(self)} queries, {n} neighbours; to_pandas() for the table)"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


AUDIT_COLUMNS = ["finding", "rank", "item_id", "path", "given", "suggested", "score"]


class AuditResult(Result):
    """audit's report. to_pandas: one row per finding (label_issue, outlier, near_duplicate, leakage) with the
    columns of `audit --csv`: finding, rank, item_id, path, given, suggested, score."""

    def _records(self) -> list[dict]:
        rows = [("label_issue", r, it["item_id"], it["path"], it["given"], it["suggested"], it["score"])
                for r, it in enumerate(self["label_issues"], 1)]
        rows += [("outlier", r, it["item_id"], it["path"], it["label"], None, it["score"])
                 for r, it in enumerate(self["outliers"], 1)]
        rows += [("near_duplicate", g, it["item_id"], it["path"], it["label"], None, grp["max_similarity"])
                 for g, grp in enumerate(self["near_duplicates"]["groups"], 1) for it in grp["items"]]
        rows += [("leakage", r, None, p["test"], p["test_label"], p["train"], p["similarity"])
                 for r, p in enumerate(self["leakage"]["pairs"], 1)]
        return [dict(zip(AUDIT_COLUMNS, row)) for row in rows]

    def _columns(self) -> list[str]:
        return AUDIT_COLUMNS

    def __repr__(self) -> str:
        return (f"AuditResult(task {self['task']!r}, {self['n_items']} items: {len(self['label_issues'])} label "
                f"issues, {len(self['outliers'])} outliers, {len(self['near_duplicates']['groups'])} near-duplicate "
                f"groups, {len(self['leakage']['pairs'])} leakage pairs)")
