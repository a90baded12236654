"""Nearest-neighbour search over an embedding set: FAISS index kinds and their tuning (index_kinds.py), keeping
a set's index in step with the store (index.py), queries by file, stored item or text, filtered by SQL
(query.py), and exact / near-duplicate detection (duplicates.py)."""
