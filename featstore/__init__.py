"""featstore: embed datasets once with frozen pretrained backbones, then fit heads and search in seconds.

    import featstore
    fs = featstore.open("my-store")
    fs.embed("images/")                         # every image once; labels from subfolder names
    fs.fit_head("images", head="logreg")        # a head on the cached features, with held-out metrics
    fs.search(like="query.jpg", k=10)           # nearest neighbours
    X, ids = fs.vectors()                       # the vectors as numpy; fs.to_pandas() joins items and labels

The package, lowest layer first: models/ (backbones -> runnable ONNX graphs), store/ (DuckDB + FAISS),
embed/ (the pipeline: source -> decode -> run -> write), search/, heads/, apps/ (what reads the store), api/
(this interface); the CLI (featstore.cli) is a thin shell over it.
"""
from featstore.api.handle import Featstore, add_model, backbones, open  # noqa: A004
from featstore.api.options import EmbedOptions, FitOptions, SearchOptions
from featstore.errors import FeatstoreError

__version__ = "0.1.0"
__all__ = ["open", "Featstore", "add_model", "backbones", "EmbedOptions", "FitOptions", "SearchOptions", "FeatstoreError", "__version__"]
