"""The run folder's file discipline: one writer, atomic files, no leftovers.

A run holds an exclusive lock on its folder for as long as it lives; the
operating system drops the lock when the process dies, even by ``kill -9``,
so a crashed run never blocks the next one.  Every file a run writes goes
to a hidden temporary name beside its destination and is renamed into place
(as :func:`minescan.results.writers.write_detections` does), so a reader sees
the old file or the new one, never half of one.  Temporaries left by a
killed run are removed when the next run takes the lock.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import IO

from minescan.errors import MinescanError

LOCK_NAME = ".minescan.lock"
# Matches the ".<stem>.<pid>.tmp<suffix>" names used here and by write_detections,
# including SQLite/GPKG side files such as ".x.123.tmp.gpkg-journal".
_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp(\.[\w-]+)?$")


class RunFolderError(MinescanError):
    """A run folder that cannot be used."""


def temporary_name(path: Path) -> Path:
    """The hidden name ``path`` is written under before being renamed into place."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return path


def lock_run_folder(folder: Path) -> IO[bytes]:
    """Create ``folder`` if needed, lock it for this process and sweep stale temporaries.

    Keep the returned file open for the run; closing it (or dying) releases the lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "ab")
    except OSError as exc:
        raise RunFolderError(f"--out-dir {folder}: cannot be used ({exc.strerror or exc})") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderError(f"--out-dir {folder}: another minescan run is writing there") from None
    for stale in folder.rglob(".*.tmp*"):
        if _TEMPORARY.match(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)
    return handle
