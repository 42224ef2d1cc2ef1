"""The run folder's file discipline: one writer, atomic files, no leftovers.

A run holds an exclusive lock on its folder for as long as it lives; the
operating system drops the lock when the process dies, even by ``kill -9``,
so a crashed run never blocks the next one.  Every file a run writes goes
through :mod:`minescan.results.atomic` (a hidden temporary name beside its
destination, synced and renamed into place), so a reader sees the old file
or the new one, never half of one.  Temporaries left by a killed run are
removed when the next run takes the lock, every one under the folder (the
lock makes them all stale); outside run folders each atomic write sweeps its
own destination's temporaries whose writer has died
(:func:`minescan.results.atomic.sweep_stale_temporaries`).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from minescan.errors import MinescanError
from minescan.results.atomic import TEMPORARY_NAME

LOCK_NAME = ".minescan.lock"


class RunFolderError(MinescanError):
    """A run folder that cannot be used."""


def lock_run_folder(folder: Path) -> IO[bytes]:
    """Create ``folder`` if needed, lock it for this process and sweep stale temporaries.

    Keep the returned file open for the run; closing it (or dying) releases the lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "ab")
    except OSError as exc:
        raise RunFolderError(f"run folder {folder}: cannot be used ({exc.strerror or exc})") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderError(f"run folder {folder}: another minescan run is writing there") from None
    for stale in folder.rglob(".*.tmp*"):
        if TEMPORARY_NAME.match(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)
    return handle
