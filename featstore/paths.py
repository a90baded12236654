"""Paths as text: a file name as valid UTF-8 for the store and the terminal, and back to one the file system
opens."""
import os
import re


def display_path(path: str) -> str:
    """A path as valid UTF-8 text: undecodable bytes in file names become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def fs_path(key: str) -> str:
    """Back from a stored path to one the file system opens (undoing the \\xNN escapes of display_path)."""
    if "\\x" not in key or os.path.lexists(key):
        return key
    return os.fsdecode(re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), key.encode()))
