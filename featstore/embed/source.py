"""Source: list the image files under a folder (recursively, following symlinks, loops guarded) with their labels."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from featstore.errors import FeatstoreError
from featstore.paths import display_path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass(frozen=True)
class SourceFile:
    """One file to embed: where it is, the name it is stored under, its label, and its stat."""

    path: str                 # the real file-system path (may hold undecodable bytes, as surrogates)
    key: str                  # the absolute path as stored (valid UTF-8; undecodable bytes escaped)
    label: str | None
    size: int | None
    mtime: float | None
    error: str | None = None  # set when the file cannot even be stat-ed


def _entry(path: str, label: str | None) -> SourceFile:
    key = display_path(os.path.abspath(path))
    try:
        st = os.stat(path)
    except OSError as exc:
        return SourceFile(path, key, label, None, None, f"cannot stat file: {exc.strerror or exc}")
    kind = not_regular(st.st_mode)
    if kind:      # never opened: a FIFO would block the read, a device (/dev/zero) would never end
        return SourceFile(path, key, label, None, st.st_mtime, f"not a regular file ({kind}), not read")
    return SourceFile(path, key, label, st.st_size, st.st_mtime)


def not_regular(mode: int) -> str | None:
    """What a non-regular file is ('FIFO', 'character device', ...), None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "special file")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_folder(root: str | Path, wanted=None) -> tuple[list[SourceFile], list[str]]:
    """All image files (or files whose name `wanted` accepts) under root, sorted by path; labels are first-level
    subfolder names.

    Returns (files, warnings): a folder that cannot be listed or a symlink loop is a warning, not a failure. A
    symlink to a folder is followed unless it leads to the folder itself or one of its ancestors (a loop); files
    reached twice (a link to a sibling folder) are listed under each path, and stored as copies of one content.
    """
    root = os.path.normpath(os.fspath(root))     # so that a folder's parent is os.path.dirname of its path
    if not os.path.isdir(root):
        raise FeatstoreError(f"{root}: not a folder")
    files, warnings = [], []
    ancestors: dict[str, frozenset] = {}        # folder path -> (dev, inode) of it and the folders above it

    def onerror(exc: OSError) -> None:
        warnings.append(f"{display_path(exc.filename or '?')}: cannot list folder ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        st = os.stat(dirpath)
        above = ancestors.get(os.path.dirname(dirpath), frozenset())
        if (st.st_dev, st.st_ino) in above:
            warnings.append(f"{display_path(dirpath)}: symlink loop, skipped")
            dirnames[:] = []
            continue
        ancestors[dirpath] = above | {(st.st_dev, st.st_ino)}
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        label = None if rel == "." else rel.split(os.sep)[0]
        for name in sorted(filenames):
            if (wanted or is_image_name)(name):
                files.append(_entry(os.path.join(dirpath, name), display_path(label) if label else None))
    files.sort(key=lambda f: f.key)
    return files, warnings


def from_paths(paths: list[str | Path]) -> list[SourceFile]:
    """Files named one by one (predict, search): folders are scanned, files kept whatever their extension."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out.extend(f for f in scan_folder(p)[0])
        elif os.path.lexists(p):
            out.append(_entry(p, None))
        else:
            raise FeatstoreError(f"{display_path(p)}: no such file")
    return out
