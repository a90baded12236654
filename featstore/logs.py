"""Whether the libraries' own log lines (faiss's C++ warnings, Ray's driver and core-worker lines) reach the
terminal: only with the CLI's --verbose. featstore prints its own progress and outcomes either way."""

_verbose = False


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = bool(on)


def verbose() -> bool:
    return _verbose
