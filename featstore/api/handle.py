"""`featstore.open(path)`: a handle on a store folder with one method per verb, the same functions the CLI calls.

Each call opens the store for just as long as it needs it (readers in parallel, one writer at a time), so a
notebook holding a handle never blocks an `embed` running elsewhere.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import fields, replace
from pathlib import Path

from featstore.api.options import EmbedOptions, FitOptions, SearchOptions
from featstore.api.results import AuditResult, FitResult, SearchResult, SearchResults
from featstore.errors import FeatstoreError


def open(path: str | os.PathLike | None = None) -> "Featstore":   # noqa: A001  (featstore.open, like io.open)
    """A handle on the store at `path` (default: $FEATSTORE_STORE, else ./.featstore); nothing is created until
    something is written."""
    from featstore.home import default_store

    return Featstore(Path(path) if path is not None else default_store())


def backbones() -> list[dict]:
    """The backbones, built-in then imported (`add_model`): name, modality, dim, input, preprocessing, licence,
    whether exported yet, default, source (weights package, or where an import came from), its dual-encoder
    partner."""
    from featstore.models.catalog import all_models, builtin_models
    from featstore.models.export import is_exported

    builtin = builtin_models()
    return [{"name": s.name, "modality": s.modality, "dim": s.dim, "input": s.input_label,
             "preprocessing": s.preprocess.describe() if s.modality == "image" else
             f"tokenizer {s.input['tokenizer']}, {s.output.get('pooling')} pooling, L2-normalised",
             "licence": s.licence, "exported": is_exported(s), "default": s.default,
             "source": s.source.get("weights_package") or s.source.get("origin"), "imported": s.name not in builtin,
             "partner": s.source.get("partner")}
            for s in sorted(all_models().values(), key=lambda s: (s.name not in builtin, s.name))]


def add_model(source: str, name: str | None = None, pooling: str | None = None, modality: str | None = None,
              force: bool = False, log=print) -> list[dict]:
    """Import a Hugging Face model (a local folder, or 'hf:ORG/NAME' from the HF cache or the hub): export it to
    ONNX with a parity check and write its catalogue entries (two for a dual encoder such as CLIP: NAME and
    NAME-text); an imported entry of the same name is replaced only with force=True. Returns their rows as
    `backbones()` lists them."""
    from featstore.models.hf_import import add_model as import_model

    names = [s.name for s in import_model(source, name=name, pooling=pooling, modality=modality, force=force,
                                          log=log)]
    return [r for r in backbones() if r["name"] in names]


def remove_model(name: str) -> dict:
    """Remove an imported model (a dual encoder: both towers): its catalogue entry and exported ONNX files; stores
    embedded with it keep their vectors. Returns {"removed": names, "files": paths deleted}."""
    from featstore.models.hf_import import remove_model as remove_import

    return remove_import(name)


def _options(cls, options, overrides: dict):
    """`options` (or the defaults) with the keyword arguments given, checked against the dataclass's fields."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; {cls.__name__} has {', '.join(sorted(known))}")
    return replace(options or cls(), **{k: v for k, v in overrides.items() if v is not None})


class Featstore:
    """The verbs over one store folder. Results are the summary objects and dicts the CLI prints."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._kept = None          # (file signature, memo, Catalog) of the store as searches last read it
        self._backbones: dict = {}  # the ONNX Runtime sessions that embedded queries, by set


    def __repr__(self) -> str:
        return f"featstore.open({str(self.root)!r})"

    @contextlib.contextmanager
    def _reading(self):
        """The store opened read-only for one call (nothing changes while it is open, so its reads are kept)."""
        from featstore.store.cached import CachedStore

        with CachedStore.open(self.root) as store:
            yield store

    @contextlib.contextmanager
    def _searching(self):
        """A reader that keeps what searches read (sets, tasks, passing sets, indexes, and once searches repeat,
        the item catalog: see store/cached.py) across calls while the store's file is unchanged. The store is
        still opened per call, so no writer is blocked between calls."""
        from featstore.store.catalog import Catalog
        from featstore.store.snapshot import signature

        with self._reading() as store:
            sig = signature(self.root)
            if self._kept is None or self._kept[0] != sig:
                self._kept = (sig, {}, Catalog())
            yield store.keep(self._kept[1], self._kept[2])

    @contextlib.contextmanager
    def _writing(self, wait: bool = False):
        from featstore.store.db import Store

        with Store.open(self.root, write=True, wait=wait) as store:
            yield store

    # ---- embed ---------------------------------------------------------------------------------------------
    def embed(self, source: str | os.PathLike, options: EmbedOptions | None = None, log=print, **opts):
        """Embed a folder of images, a manifest of images or a text source (see EmbedOptions; keyword arguments
        override `options`). Returns the run's EmbedSummary."""
        from featstore.api.embedding import embed

        return embed(self.root, str(source), _options(EmbedOptions, options, opts), log=log)

    def label(self, task: str, csv_path: str | os.PathLike) -> dict:
        """Labels for a task from a CSV with a 'path' or 'hash' column and a 'label' column."""
        from featstore.store.labels import label_from_csv

        with self._writing() as store:
            return label_from_csv(store, task, csv_path)

    def meta(self, csv_path: str | os.PathLike) -> dict:
        """Metadata for items already stored, from a table (CSV, TSV, Parquet, JSONL) with a 'path' column: every
        other column is stored with the type DuckDB reads in it, filterable in `where` and shown in results.
        Returns rows, matched_paths, columns (name -> type), new_columns and the unmatched rows."""
        from featstore.store.metadata import meta_from_csv

        with self._writing() as store:
            return meta_from_csv(store, csv_path)

    # ---- heads ---------------------------------------------------------------------------------------------
    def fit_head(self, task: str | None = None, options: FitOptions | None = None, log=lambda _msg: None,
                 **opts) -> FitResult:
        """Fit a head on the cached features of `task` (None: the store's only task; head='all': a leaderboard;
        shots=[...]: a few-shot curve; head='zero-shot': from class-name prompts, no labels used), evaluated on the
        task's stored held-out split and stored under its name. A FitResult: the report dict, with to_pandas."""
        from featstore.heads import fit as fitting
        from featstore.store.labels import task_for

        o = _options(FitOptions, options, opts)
        if o.cut is not None and (o.head != "finetune" or o.shots):
            raise FeatstoreError("--cut applies to --kind finetune (one head, not --shots) only")
        fitting.check_options(o.head, o.C, o.name, o.target, o.shots, o.seeds, o.plot, o.prompts, o.force,
                              plot_normalize=o.plot_normalize)
        predictions = None
        with self._writing() as store:
            task = task_for(store, task, required=True)
            if o.shots:
                out = fitting.few_shot(store, task, o.shots, seeds=o.seeds or 5, kind=o.head, model=o.model)
            else:
                data = fitting.load_task(store, task, o.model, o.target)
                if o.plot_normalize and data.task_type != "classification":
                    raise FeatstoreError("--plot-normalize applies to a confusion matrix; task "
                                         f"{task!r} has a numeric target (--plot draws predicted vs actual)")
                if o.head == "zero-shot":
                    out = fitting.fit_zero_shot(store, task, o.prompts, model=o.model, name=o.name, data=data,
                                                force=o.force)
                elif o.head == "all":
                    out = fitting.leaderboard(store, task, model=o.model, name=o.name, target=o.target, data=data,
                                              log=log, force=o.force)
                else:
                    params = {"C": o.C} if o.C is not None else {}
                    if o.head == "finetune":
                        params["log"] = log          # its epochs, as they end
                        params["cut"] = o.cut
                    out = fitting.fit_head(store, task, o.head, model=o.model, name=o.name, target=o.target,
                                           data=data, force=o.force, **params)
                if o.plot and data.task_type == "regression":
                    from featstore.heads.plot import held_out_predictions

                    predictions = held_out_predictions(store, out["rows"][0]["head"] if "rows" in out
                                                       else out["name"], data)
        if o.plot:
            fitting.plot_result(out, o.plot, curve=bool(o.shots), normalize=o.plot_normalize,
                                predictions=predictions)
        return FitResult(out)

    def heads(self) -> list[dict]:
        """The stored heads: name, kind, task, embedding set, held-out score, what was chosen."""
        return self.stats()["heads"]

    def remove_head(self, name: str) -> dict:
        """Delete a stored head; returns its name, kind, task and embedding set."""
        from featstore.heads.storage import remove_head

        with self._writing() as store:
            return remove_head(store, name)

    def predict(self, head: str, files, progress: bool = False, add: bool = False) -> dict:
        """Label and probability per file; the store is left as it was unless `add` (then new files are embedded
        once and kept). A file that cannot be used comes back with status 'failed' and the reason."""
        from featstore.apps.predict import predict

        files = [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]
        with (self._writing() if add else self._reading()) as store:
            return predict(store, head, files, progress=progress, add=add)

    def export(self, head: str, output: str | os.PathLike) -> dict:
        """One ONNX file: image tensor in, class probabilities out (backbone and head fused, checked)."""
        from featstore.apps.fuse import export_fused

        with self._reading() as store:
            return export_fused(store, head, output)

    # ---- search --------------------------------------------------------------------------------------------
    def search(self, like=None, text: str | None = None, ids=None, queries=None, vector=None,
               options: SearchOptions | None = None, **opts):
        """Nearest stored items by cosine similarity. One query (a file `like`, a `text`, one stored id in `ids`,
        or a ready-made `vector`: the set named by `model`, else the newest of its dimension) gives one
        SearchResult (its dict, with to_pandas); a batch (`like` a folder, several `ids`, a `queries` CSV, a 2-D
        `vector` array) a SearchResults list of them."""
        from featstore.search.query import search_many

        o = _options(SearchOptions, options, opts)
        batch, single = build_queries(like=like, ids=ids, text=text, queries=queries, vector=vector)
        with self._searching() as store:
            outs = search_many(store, batch, k=o.k, model=o.model, task=o.task, where=o.where,
                               backbones=self._backbones, indexes=self._indexes())
        return SearchResult(outs[0]) if single else SearchResults(SearchResult(o) for o in outs)

    def _indexes(self) -> dict:
        """The FAISS indexes searches opened, kept with the reads (see _searching)."""
        return self._kept[1].setdefault("indexes", {})

    def duplicates(self, threshold: float = 0.97, task: str | None = None, model: str | None = None) -> dict:
        """Exact copies, near-duplicate groups, and with `task` the pairs straddling its held-out split."""
        from featstore.search.duplicates import duplicates

        with self._reading() as store:
            return duplicates(store, threshold=threshold, task=task, model=model)

    def knn_graph(self, model: str | None = None, k: int = 10, log=lambda _msg: None) -> dict:
        """The embedding set's kNN graph (each live item's k nearest, stored in DuckDB) built or brought up to
        date; returns its header (generation, k, exact, index, recall, what was recomputed)."""
        from featstore.search.knn_graph import graph

        with self._writing() as store:
            return {"set_id": store.pick_set(model).set_id} | graph(store, store.pick_set(model), k, log=log)

    def audit(self, task: str | None = None, model: str | None = None, k: int = 10, threshold: float = 0.97,
              limit: int = 50, sheet: str | os.PathLike | None = None, log=lambda _msg: None) -> AuditResult:
        """Label issues, outliers, near-duplicates and split leakage of a task (see docs/audit.md); with `sheet`,
        also a contact sheet (.png, .svg or .pdf) of the top-ranked items of each finding. An AuditResult: the
        report dict, with to_pandas (one row per finding)."""
        from featstore.apps.audit import audit

        if sheet is not None:                   # a bad extension or folder, or no matplotlib: said before any work
            from featstore.heads.plot_io import check_plot_path, matplotlib

            check_plot_path(sheet, "--sheet")
            matplotlib()
        with self._writing() as store:
            out = audit(store, task, model=model, k=k, threshold=threshold, limit=limit, log=log)
        if sheet is not None:
            from featstore.apps.contact_sheet import contact_sheet

            out["sheet"] = contact_sheet(out, sheet)
        return AuditResult(out)

    def select(self, task: str | None = None, n: int = 10, strategy: str = "diverse", seed: int = 0,
               model: str | None = None, include_labelled: bool = False, log=lambda _msg: None) -> dict:
        """N items to label next (strategy diverse | uncertain | typical), from the items without a label in the
        task (or all, include_labelled)."""
        from featstore.apps.selection import select

        with self._writing() as store:
            return select(store, task, n, strategy, seed=seed, model=model, include_labelled=include_labelled,
                          log=log)

    def rank(self, task: str | None = None, log=lambda _msg: None) -> dict:
        """LogME transferability of every embedding set and cut activation set holding `task` (None: the store's
        only task), beside the held-out accuracy of the heads stored on each, with Kendall's tau between them."""
        from featstore.apps.rank import rank
        from featstore.store.labels import task_for

        with self._reading() as store:
            return rank(store, task_for(store, task, required=True), log=log)

    def build_index(self, kind: str = "auto", recall: float | None = None, memory: str | int | None = None,
                    model: str | None = None, wait: bool = False, log=lambda _msg: None) -> dict:
        """Choose, build and tune the FAISS index of an embedding set within a memory budget (None: 4GB for auto,
        none for a kind asked); returns its stamp."""
        from featstore.store.index import DEFAULT_RECALL, read_stamp, rebuild
        from featstore.store.index_kinds import parse_bytes

        try:
            budget = None if memory is None else parse_bytes(memory) if isinstance(memory, str) else int(memory)
        except ValueError as exc:
            raise FeatstoreError(f"--memory: {exc}") from None
        with self._writing(wait) as store:
            s = store.pick_set(model)
            rebuild(store, s, kind, recall if recall is not None else DEFAULT_RECALL, budget, log=log)
            return {"set_id": s.set_id, "model": s.model} | read_stamp(store, s)

    # ---- curation (apps/curate.py): each write one edit in the store's edit log, undoable ----------------------
    def set_labels(self, task: str, items=None, label: str | None = ..., where: str | None = None,
                   who: str | None = None) -> dict:
        """Give the items (ids, or paths; or those passing `where`) `label` in `task`; label None removes theirs.
        Returns the edit: edit_id (None when nothing changed), changed, unchanged, generation."""
        from featstore.apps import curate

        if label is ...:
            raise FeatstoreError("set_labels: give the label (label=None removes the items' label)")

        return self._edit(lambda store, paths, who: curate.set_labels(store, task, paths, label, who),
                          items, where, task, who, new_task=True)

    def tag(self, items=None, tag: str | None = None, remove: bool = False, where: str | None = None,
            task: str | None = None, who: str | None = None) -> dict:
        """Add `tag` to the items (ids or paths, or those passing `where`; `task`: whose labels it reads), or
        with remove=True take it off."""
        from featstore.apps import curate

        return self._edit(lambda store, paths, who: curate.tag(store, paths, tag, remove, who), items, where, task,
                          who)

    def exclude(self, items=None, reason: str = "excluded", where: str | None = None, task: str | None = None,
                who: str | None = None) -> dict:
        """Leave the items out of fitting and evaluation (fit_head, Xy, audit) for `reason` ('duplicate',
        'outlier' or any short text)."""
        from featstore.apps import curate

        return self._edit(lambda store, paths, who: curate.exclude(store, paths, reason, who), items, where, task,
                          who)

    def include(self, items=None, where: str | None = None, task: str | None = None, who: str | None = None) -> dict:
        """Take the items' exclusion back."""
        from featstore.apps import curate

        return self._edit(lambda store, paths, who: curate.exclude(store, paths, None, who), items, where, task,
                          who)

    def accept(self, task: str | None = None, source=None, only=None, who: str | None = None) -> dict:
        """Give the audit's label issues their suggested label in `task`: `source` a CSV written by `featstore
        audit --csv`, or rows (dicts with path or item_id, given, suggested), or None for the task's newest
        stored audit; `only`: just these item ids. Rows whose label changed since the audit are skipped."""
        from featstore.apps import curate
        from featstore.store.labels import task_for

        with self._writing() as store:
            task = task_for(store, task, required=True)
            if source is None or isinstance(source, (str, os.PathLike)):
                rows, name = curate.label_issue_rows(store, task, source)
            else:
                rows, name = [dict(r) for r in source], "rows given"
            return curate.accept(store, task, rows, who or curate.who_default(), source=name, only=only)

    def undo(self, edit: int | None = None, who: str | None = None) -> dict:
        """Undo edit `edit` (default: the newest not undone yet); undoing an undo redoes it. Returns undone,
        edit_id (the undo's own), changed, generation."""
        from featstore.apps import curate

        with self._writing() as store:
            return curate.undo(store, who or curate.who_default(), edit)

    def history(self, limit: int = 50) -> list[dict]:
        """The newest edits, newest first: edit_id, at, who, action, task, count, undone (by which edit), summary."""
        from featstore.store.edits import history

        with self._reading() as store:
            return history(store, limit)

    def tags(self) -> dict[str, int]:
        """Every tag and how many items carry it."""
        from featstore.store.edits import all_tags

        with self._reading() as store:
            return all_tags(store)

    def excluded(self) -> dict[str, str]:
        """Excluded items: path -> reason."""
        from featstore.store.edits import excluded_paths

        with self._reading() as store:
            return excluded_paths(store)

    def _edit(self, write, items, where, task, who, new_task: bool = False) -> dict:
        """Run one curation write on the items named (ids or paths) or passing `where` (read first, on a reader,
        with the labels of `task`; `new_task`: a task not in the store yet is fine, it has no labels)."""
        import numbers

        from featstore.apps import curate

        if (items is None) == (where is None):
            raise FeatstoreError("choose the items: give ids or paths, or a where condition (one of them)")
        if isinstance(items, (str, os.PathLike, int)):
            items = [items]
        if where is not None:
            from featstore.store.labels import shown_task

            with self._reading() as store:
                fresh = new_task and task is not None and task not in store.tasks()
                paths = curate.paths_where(store, where, task if fresh else shown_task(store, task, where))
        with self._writing() as store:
            if where is None:
                ids = [int(i) for i in items if isinstance(i, numbers.Integral)]
                paths = curate.paths_of(store, ids=ids, paths=[str(i) for i in items
                                                               if not isinstance(i, numbers.Integral)])
            return write(store, paths, who or curate.who_default())

    # ---- reading the store ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        """What the store holds: items by status, duplicates, failures, embedding sets, tasks, heads, runs."""
        from featstore.apps.stats import stats

        with self._reading() as store:
            return stats(store)

    def verify(self, rehash: bool = False) -> dict:
        """Finite vectors, FAISS in step with DuckDB, and with `rehash` files changed or vanished."""
        from featstore.apps.verify import verify

        with self._reading() as store:
            return verify(store, rehash=rehash)

    def gc(self, dry_run: bool = False) -> dict:
        """Remove superseded vectors and embedding sets that nothing uses any more."""
        from featstore.store.gc import collect

        with self._writing() as store:
            return collect(store, dry_run=dry_run)

    def vectors(self, model: str | None = None, task: str | None = None):
        """(vectors float32 (n, dim), item ids int64 (n,)): one row per stored item of the embedding set (the
        newest, or `model`); with `task`, only the items labelled in it."""
        import numpy as np

        table = self._table(model, task, vectors=True, labelled_only=task is not None)
        ids = table.column("item_id").to_numpy().astype(np.int64)
        dim = table.schema.field("vector").type.list_size
        flat = table.column("vector").combine_chunks().flatten().to_numpy()
        return np.ascontiguousarray(flat.reshape(len(ids), dim), dtype=np.float32), ids

    def Xy(self, task: str | None = None, split: str | None = None, model: str | None = None,   # noqa: N802
           target: str = "auto"):
        """(X float32 (n, dim), y (n,)): the labelled items of `task` as fit_head reads them, one row per distinct
        content; y class names (str), or floats for a numeric target. split 'train' | 'test': only that part of
        the task's stored held-out split (drawn by the first fit_head)."""
        import numpy as np

        from featstore.heads.fit import load_task
        from featstore.store.labels import task_for

        if split not in (None, "train", "test"):
            raise FeatstoreError(f"split must be 'train', 'test' or None, got {split!r}")
        with self._reading() as store:
            task = task_for(store, task, required=True)
            stored = store.split_of(task)
            data = load_task(store, task, model, target)
        X = np.ascontiguousarray(data.X, dtype=np.float32)
        if split is None:
            return X, data.y
        if not stored:
            raise FeatstoreError(f"task {task!r} has no stored held-out split yet: fit a head first "
                                 f"(fs.fit_head({task!r})), which draws and stores it")
        unassigned = sum(h not in stored for h in data.hashes)
        if unassigned:
            raise FeatstoreError(f"{unassigned} labelled items of task {task!r} are not in its stored split yet "
                                 "(labelled since the last fit): fit a head to assign them")
        keep = data.test if split == "test" else ~data.test
        return X[keep], data.y[keep]

    def head(self, name: str):
        """The stored head `name` as a fitted scikit-learn estimator (predict; predict_proba and classes_ for a
        classifier) on the vectors of its embedding set, with the outputs of `predict`."""
        from featstore.api.stored_head import as_estimator
        from featstore.heads.storage import load_head

        with self._reading() as store:
            return as_estimator(*load_head(store, name))

    def items(self, task: str | None = None):
        """The stored items (ok status) as a pandas DataFrame: item_id, path, hash, size, mtime, width, height,
        updated_at, label and split of `task` (default: the store's only task; with several, name one), text, then
        the store's metadata columns."""
        return self._table(None, task, vectors=False).to_pandas()

    def to_pandas(self, model: str | None = None, task: str | None = None):
        """Items, labels of `task` and vectors of the embedding set joined: one row per item, `vector` a float32
        array per row, all views of one (n, dim) block; `featstore.vectors_of(frame)` gives the 2-D array of any
        selection of rows (items without a vector in the set are left out)."""
        from featstore.api.frames import vector_rows

        table = self._table(model, task, vectors=True)
        frame = table.drop_columns(["vector"]).to_pandas()
        frame["vector"] = vector_rows(table.column("vector"))
        return frame

    def to_arrow(self, model: str | None = None, task: str | None = None):
        """As to_pandas, as a pyarrow Table (`vector` a fixed-size list column)."""
        return self._table(model, task, vectors=True)

    def _table(self, model, task, vectors: bool, labelled_only: bool = False):
        """The item view (with the set's vectors) as a pyarrow Table, read fully before the store closes."""
        import importlib.util

        from featstore.store.labels import task_for

        if importlib.util.find_spec("pyarrow") is None or importlib.util.find_spec("pandas") is None:
            raise FeatstoreError("reading the store into numpy, pandas or Arrow needs pyarrow and pandas: "
                                 "pip install 'featstore[frames]'")
        with self._reading() as store:
            task = task_for(store, task)        # the default-task rule: the only task, else name one
            sql = f"SELECT item.* FROM ({store.item_view()}) AS item"
            if vectors:
                sql = (f"SELECT item.*, e.vector FROM ({store.item_view()}) AS item "
                       f"JOIN {store.pick_set(model).table} e ON e.hash = item.hash")
            if labelled_only:
                sql += " WHERE item.label IS NOT NULL"
            with store.con.cursor() as cur:
                rel = cur.sql(sql + " ORDER BY item.item_id", params={"task": task})
                return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()   # duckdb 1.x


def build_queries(like=None, ids=None, text: str | None = None, queries=None, vector=None):
    """(the queries, whether it is a single one): a file or every image in a folder, stored ids (an int, a list,
    or text like '3,17,42'), a text, a CSV of queries, or ready-made vectors (one row, or a 2-D array of rows)."""
    from featstore.embed.source import scan_folder
    from featstore.search.query import Query, read_queries

    batch = []
    if queries:
        batch += read_queries(str(queries))
    folder = like is not None and os.path.isdir(like)
    if folder:
        batch += [Query("file", f.path) for f in scan_folder(like)[0]]
    elif like is not None:
        batch.append(Query("file", str(like)))
    id_list = _ids(ids)
    batch += [Query("id", i) for i in id_list]
    if text is not None:
        batch.append(Query("text", text))
    import numpy as np

    rows = None if vector is None else np.asarray(vector)
    if rows is not None:
        batch += [Query("vector", row) for row in (rows if rows.ndim == 2 else [rows])]
    if not batch:
        raise FeatstoreError("give a query: --like FILE|FOLDER, --id ID[,ID...], --text TEXT, --vector-file NPY "
                             "or --queries CSV")
    return batch, (len(batch) == 1 and not queries and not folder and not isinstance(ids, (list, tuple))
                   and (rows is None or rows.ndim == 1))


def _ids(ids) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    if isinstance(ids, (list, tuple)):
        return [int(i) for i in ids]
    try:
        return [int(v) for v in str(ids).split(",") if v.strip()]
    except ValueError:
        raise FeatstoreError(f"--id: expected item ids like 42 or 3,17,42, got {ids!r}") from None

