"""Whether the libraries' own log lines (faiss's C++ warnings, Ray's driver and core-worker lines) reach the
terminal: only with the CLI's --verbose. featstore prints its own progress and outcomes either way."""
import contextlib
import os

_verbose = False


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = bool(on)


def verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def quiet_stderr():
    """Unless verbose: file descriptor 2 goes to /dev/null for the block, for what C++ libraries print straight
    to it (Python exceptions still propagate; sys.stderr is flushed first)."""
    if _verbose:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
