"""Vanished items: what a re-embedded source no longer holds is marked `removed` (kept for history, never live).

A source covers a scope of stored keys: a folder, the paths under it that its listing would list (image names for
an image folder, .txt for a text folder); a text table, its `<table>#<id>` rows. After a fresh listing, a key in
the scope that was not listed has vanished: for a file only when the file system says it is not there (ENOENT,
so a folder that could not be listed loses nothing), for a table row because the table was read whole. A
manifest names a selection of files, not a folder's contents, so it has no scope: its rows whose files are gone
are recorded failed, as before. Marked items leave search, heads, duplicates and counts (only `ok` items are
live); the next index refresh drops their vectors unless a live item shares the content; `gc` deletes their rows
and then-unused vectors; a file that reappears is embedded again (its record revived).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from featstore.paths import display_path, fs_path
from featstore.store.db import Store

REMOVED = "removed"


@dataclass(frozen=True)
class Scope:
    prefix: str                                   # stored keys starting with this belong to the source
    listed: frozenset                             # the keys the fresh listing holds
    wanted: Callable[[str], bool] | None = None   # file-name filter of the listing; None: table rows
    reason: str = "vanished from the folder"

    def vanished(self, key: str) -> bool:
        if key in self.listed:
            return False
        if self.wanted is None:
            return True
        if not self.wanted(os.path.basename(key)):
            return False
        try:
            os.lstat(fs_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:            # there, but not readable now (permissions): not vanished
            return False
        return False               # on disk but not listed (under an unlistable folder, a symlink loop)


def folder_scope(folder: str, keys, wanted: Callable[[str], bool]) -> Scope:
    root = display_path(os.path.abspath(folder))
    return Scope(root if root.endswith(os.sep) else root + os.sep, frozenset(keys), wanted)


def table_scope(table: str, keys) -> Scope:
    return Scope(display_path(os.path.abspath(table)) + "#", frozenset(keys), None, "no longer in the table")


def mark_vanished(store: Store, scope: Scope | None) -> list[str]:
    """Mark the scope's vanished ok/failed items `removed`, in one transaction; returns their keys, sorted."""
    if scope is None:
        return []
    rows = store.con.execute("SELECT path FROM items WHERE starts_with(path, ?) AND status IN ('ok', 'failed')",
                             [scope.prefix]).fetchall()
    gone = sorted(p for (p,) in rows if scope.vanished(p))
    if gone:
        with store.transaction():
            store.con.execute("UPDATE items SET status = $1, error = $2, updated_at = now() "
                              "WHERE path IN (SELECT unnest($3::VARCHAR[]))", [REMOVED, scope.reason, gone])
            store._bump_generation()
    return gone
