"""User-facing errors: one clear line each, shown by the CLI without a traceback."""


class FeatstoreError(Exception):
    """A problem the user can fix (bad argument, unknown name, busy store...)."""


class DecodeError(FeatstoreError):
    """An input file that cannot be turned into an image; recorded as `failed`, never fatal to a run."""


def one_of(kind: str, name: str, known) -> FeatstoreError:
    """An 'unknown X' error that lists the known names."""
    known = sorted(known)
    listing = ", ".join(known) if known else "none yet"
    return FeatstoreError(f"unknown {kind} {name!r}; known: {listing}")
