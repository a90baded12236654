"""The writer lock: one writer per store at a time, through an flock on a file that names its holder (PID,
command, since when), so the next writer or a reader can say who has it."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from featstore.errors import FeatstoreError

LOCK_FILE = "writer.lock"


def describe_holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return f" by PID {info['pid']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return " by another process"


def take_writer_lock(lock_path: Path, wait: bool) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            holder = describe_holder(lock_path)
            os.close(fd)
            raise FeatstoreError(f"store {lock_path.parent} is being written{holder}; "
                                 "wait for it to finish (or pass --wait)") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
    info = {"pid": os.getpid(), "command": " ".join(["featstore"] + sys.argv[1:3]),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd
