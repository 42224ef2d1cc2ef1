"""Write a file all at once or not at all: minescan's one atomic writer.

Every file minescan produces (results, quicklooks, run summaries, VRTs, ONNX
models, TensorRT engines and their sidecars) goes through here:

1. the content goes to a hidden temporary file *in the destination folder*
   (``.<name>.<pid>-<token>.tmp<suffix>``, see :func:`temporary_path`), so
   the final rename never crosses a file system;
2. the temporary file is flushed and ``fsync``-ed, so what is renamed into
   place is on disk;
3. ``os.replace`` renames it over the destination (atomic on one file
   system), then the folder is ``fsync``-ed (best effort) so the rename is too;
4. on any failure, including ``KeyboardInterrupt``, the temporary file and
   whatever a writer left beside it (``-journal``, ``.shx``...) is removed.

A reader therefore sees the old file or the new one, never a torn one, and an
existing file is replaced only by a complete one.  :func:`write_atomically`
takes bytes; :func:`atomic_path` hands writers that create the file
themselves (pyogrio, pyarrow) a temporary path and does steps 2-4 after them.

Temporaries left by a killed process match :data:`TEMPORARY_NAME`;
:func:`minescan.runs.outdir.lock_run_folder` sweeps them.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from minescan.errors import MinescanError

TEMPORARY_NAME = re.compile(r"^\..+\.\d+(-[0-9a-f]+)?\.tmp(\.[\w-]+)?$")
"""Names of temporaries (and their side files, e.g. ``.x.gpkg.12-ab.tmp.gpkg-journal``); also the
older ``.<stem>.<pid>.tmp<suffix>`` form."""


class AtomicWriteError(MinescanError):
    """A file that cannot be written (whole); the message names it: ``cannot write <path>: <why>``."""


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name beside ``path`` (same folder, same suffix) to write ``path``'s content under."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def write_atomically(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> int:
    """Write ``data`` to ``path`` atomically (creating its folder); return the size written.

    Raises :class:`AtomicWriteError` ``cannot write <path>: <reason>``; ``path`` is untouched then.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _error(path, exc) from exc
    with atomic_path(path) as temporary:
        try:
            with open(temporary, "xb") as stream:
                stream.write(data)
        except OSError as exc:
            raise _error(path, exc) from exc
    return memoryview(data).nbytes


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, sidecars: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` under; on a clean exit make it ``path`` atomically.

    The body must create the file at the yielded path (it does not exist yet).
    ``sidecars`` are suffixes of companion files a writer puts beside it (a
    shapefile's ``.shx``, ``.dbf``...): each one written is renamed over
    ``path.with_suffix(suffix)`` before the main file, which goes last, and a
    destination sidecar the new write did not produce is removed, so an old
    ``.cpg`` does not outlive its shapefile.  Several renames cannot be one
    atomic step; the main file last is as close as a multi-file format gets.

    If the body raises (anything, ``KeyboardInterrupt`` included) the
    temporaries are removed, ``path`` is untouched and the exception goes on;
    an ``OSError``, the body's or from syncing and renaming, becomes
    :class:`AtomicWriteError` naming ``path``.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        if not temporary.is_file():
            raise AtomicWriteError(f"cannot write {path}: the writer left no file")
        moves = [(temporary.with_suffix(s), path.with_suffix(s)) for s in sidecars] + [(temporary, path)]
        for written, _ in moves:
            if written.is_file():
                _sync(written)
        for written, final in moves:
            if written.is_file():
                os.replace(written, final)
            elif final != path:
                final.unlink(missing_ok=True)
        _sync_folder(path.parent)
    except OSError as exc:
        raise _error(path, exc) from exc
    finally:
        _remove_temporaries(temporary)


def _sync(path: Path) -> None:
    with open(path, "rb+") as stream:
        stream.flush()
        os.fsync(stream.fileno())


def _sync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform or file system lets a folder be opened; the rename is done anyway
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _remove_temporaries(temporary: Path) -> None:
    """Remove ``temporary`` and every file a writer put beside it under the same (unique) stem."""
    stem = temporary.name[: -len(temporary.suffix)] if temporary.suffix else temporary.name
    try:
        leftovers = [p for p in temporary.parent.iterdir() if p.name.startswith(stem)]
    except OSError:
        return
    for leftover in leftovers:
        try:
            leftover.unlink()
        except OSError:
            pass  # a folder, or already gone: nothing of ours to remove


def _error(path: Path, exc: OSError) -> AtomicWriteError:
    return AtomicWriteError(f"cannot write {path}: {exc.strerror or exc}")
