"""The store: one DuckDB file for items, labels, splits, embedding sets and vectors (db.py: the Store, opened as
one writer or as a reader; schema.py: its tables; lock.py: the writer lock; vectors.py: reading vectors as numpy),
each set's FAISS index kept in step with it (index.py; the index kinds and their tuning in index_kinds.py), labels
and the default-task rule (labels.py), items vanished from a re-embedded source (vanished.py), and garbage
collection of what nothing uses any more (gc.py)."""
