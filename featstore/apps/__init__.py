"""What reads the store: predictions on new files (predict.py), one-file ONNX deployment of a head (fuse.py),
the store's summary (stats.py) and its consistency check (verify.py)."""
