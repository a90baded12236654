"""Content identity: a fast hash of a file's bytes (xxh3-128), so copies and renames are never re-embedded."""
import hashlib
from pathlib import Path

import xxhash


def content_hash(data: bytes) -> str:
    """xxh3-128 of the bytes, as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(data)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (used for model files, where a cryptographic hash is wanted)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
