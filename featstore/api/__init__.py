"""The Python API: `featstore.open(path)` gives a handle (handle.py) whose methods are the CLI's verbs; options
are one dataclass per verb (options.py); the embed verb's composition lives in embedding.py; fit_head, search
and audit return the dicts of results.py (with to_pandas); frames.py puts vectors in tables; stored_head.py
gives a stored head as a scikit-learn estimator."""
