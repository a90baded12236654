"""Where featstore keeps things outside a store: exported ONNX backbones (FEATSTORE_HOME)."""
import os
from pathlib import Path

HOME_ENV = "FEATSTORE_HOME"
STORE_ENV = "FEATSTORE_STORE"
DEFAULT_STORE = ".featstore"


def home_dir() -> Path:
    """The featstore home: $FEATSTORE_HOME, else $XDG_CACHE_HOME/featstore, else ~/.cache/featstore."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "featstore"


def exports_dir() -> Path:
    """Folder of exported backbones, one ONNX file per (weights, spec) hash."""
    path = home_dir() / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store() -> Path:
    """The store used when --store is not given: $FEATSTORE_STORE, else ./.featstore."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)
