"""URIs: files named by an fsspec URL (s3://, gs://, file://, ...) instead of a local path, for the Ray engine's
manifests and staging. fsspec (and the backend for the scheme, e.g. s3fs) is needed only when a URL is used."""
from __future__ import annotations

import os

from .errors import FeatstoreError


def is_uri(text: str) -> bool:
    return "://" in str(text)


def filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise FeatstoreError(f"{url}: URLs need fsspec (pip install fsspec, plus the backend for the scheme, "
                             "e.g. s3fs or gcsfs)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise FeatstoreError(f"{url}: {exc}") from None


def read_bytes(url: str, limit: int = -1) -> bytes:
    """The object's bytes; at most `limit` of them when limit >= 0 (the caller checks what it got)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read(limit)


def stat(url: str) -> tuple[int, float]:
    """(size, mtime) of a URL's object; mtime 0.0 where the backend keeps none (then changes are found by size
    and content hash only)."""
    fs, path = filesystem(url)
    info = fs.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or 0.0
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    try:
        mtime = float(mtime)
    except (TypeError, ValueError):
        mtime = 0.0
    return int(info["size"]), mtime


def join(url: str, *names: str) -> str:
    return url.rstrip("/") + "/" + "/".join(names)


def upload(local: str | os.PathLike, url: str) -> None:
    """Copy a local file to a URL, under a temporary name first, so the final name appears only when whole."""
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), path + ".tmp")
    fs.mv(path + ".tmp", path)


def download(url: str, local: str | os.PathLike) -> bool:
    """Copy a URL's object to a local file; False when it does not exist."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    fs.get_file(path, str(local))
    return True
