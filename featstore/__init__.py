"""featstore: embed datasets once with frozen pretrained backbones, then fit heads and search in seconds.

Pipeline: source (source.py) -> decode (decode.py) -> preprocess (preprocess.py) -> backbone (backbone.py, ONNX
Runtime) -> store (store.py, DuckDB; index.py, FAISS), composed by embed.py. Heads (heads.py), search (search.py)
and predict (predict.py) read the store. The CLI (featstore.cli) is a thin layer over these functions.
"""
__version__ = "0.1.0"
