"""featstore: embed datasets once with frozen pretrained backbones, then fit heads and search in seconds.

    import featstore
    fs = featstore.open("my-store")
    fs.embed("images/")                         # every image once; labels from subfolder names
    fs.fit_head("images", head="logreg")        # a head on the cached features, with held-out metrics
    fs.search(like="query.jpg", k=10)           # nearest neighbours
    X, y = fs.Xy("images", split="train")       # features and labels as numpy; fs.to_pandas() joins items
    clf = fs.head("images")                     # a stored head as a fitted scikit-learn estimator

The package, lowest layer first: models/ (backbones -> runnable ONNX graphs), store/ (DuckDB + FAISS),
embed/ (the pipeline: source -> decode -> run -> write), search/, heads/, apps/ (what reads the store), api/
(this interface); the CLI (featstore.cli) is a thin shell over it.
"""
from featstore.api.handle import Featstore, add_model, backbones, open, remove_model  # noqa: A004
from featstore.api.frames import vectors_of
from featstore.api.options import EmbedOptions, FitOptions, SearchOptions
from featstore.api.results import AuditResult, FitResult, SearchResult, SearchResults
from featstore.errors import FeatstoreError
from featstore.models.deploy import preprocess

__version__ = "0.1.0"
__all__ = ["open", "Featstore", "add_model", "remove_model", "backbones", "EmbedOptions", "FitOptions", "SearchOptions", "FeatstoreError", "preprocess", "__version__",
           "vectors_of", "FitResult", "SearchResult", "SearchResults", "AuditResult"]
