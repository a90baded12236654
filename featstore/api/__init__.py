"""The Python API: `featstore.open(path)` gives a handle (handle.py) whose methods are the CLI's verbs; options
are one dataclass per verb (options.py); the embed verb's composition lives in embedding.py."""
