"""The store: one DuckDB file for items, labels, splits, embedding sets and vectors (db.py), labels from a CSV
(labels.py), and garbage collection of what nothing uses any more (gc.py)."""
