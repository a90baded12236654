"""User-facing errors: one clear line each, shown by the CLI without a traceback."""
import errno


class FeatstoreError(Exception):
    """A problem the user can fix (bad argument, unknown name, busy store...)."""


class DecodeError(FeatstoreError):
    """An input file that cannot be turned into an image; recorded as `failed`, never fatal to a run."""


def one_of(kind: str, name: str, known) -> FeatstoreError:
    """An 'unknown X' error that lists the known names."""
    known = sorted(known)
    listing = ", ".join(known) if known else "none yet"
    return FeatstoreError(f"unknown {kind} {name!r}; known: {listing}")


def is_disk_full(exc: BaseException) -> bool:
    """An error from running out of disk space, quota or file-size limit: an OSError, or DuckDB's or FAISS's own
    error, which only names it in its message."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "Disk quota exceeded", "File too large"))
