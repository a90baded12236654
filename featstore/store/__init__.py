"""The store: one DuckDB file for items, labels, splits, embedding sets and vectors (db.py), each set's FAISS index
kept in step with it (index.py; the index kinds and their tuning in index_kinds.py), labels from a CSV
(labels.py), and garbage collection of what nothing uses any more (gc.py)."""
