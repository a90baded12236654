"""Nearest-neighbour search over an embedding set's FAISS index (kept by featstore.store.index): queries by file,
stored item or text, filtered by SQL (query.py), and exact / near-duplicate detection (duplicates.py)."""
