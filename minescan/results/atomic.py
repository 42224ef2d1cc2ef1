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

Temporaries left by a killed process (``kill -9``, a power cut) match
:data:`TEMPORARY_NAME` and are swept at two places:

* before each write, :func:`sweep_stale_temporaries` removes the temporaries
  *of the same destination* whose writing process no longer exists: the pid
  in the name is not a running process (or a zombie), or the process now
  holding that pid started after the file was last modified (a reused pid;
  Linux's ``/proc`` tells, elsewhere such a file is kept).  A live
  concurrent writer's temporary is never touched, nor another
  destination's.  A pid only means something on the machine that wrote it:
  two machines writing one destination in a shared folder at the same
  moment are not supported (the sweep could take the other's temporary,
  whose rename then fails loudly, never tearing the destination);
* :func:`minescan.runs.outdir.lock_run_folder` removes every temporary under
  a run folder once it holds the folder's lock.

Test hook, not a setting: ``MINESCAN_FAULT=after-temp`` or ``after-rename``,
optionally ``:<pattern>`` (``fnmatch`` on the destination's file name, e.g.
``after-rename:*.gpkg``), makes the process ``SIGKILL`` itself once the
temporary is written and synced, or once it is renamed into place, so that
tests can kill a real ``minescan`` at exactly that point (see
``tests/test_interrupts.py``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from minescan.errors import MinescanError

TEMPORARY_NAME = re.compile(r"^\..+\.\d+(-[0-9a-f]+)?\.tmp(\.[\w-]+)?$")
"""Names of temporaries (and their side files, e.g. ``.x.gpkg.12-ab.tmp.gpkg-journal``); also the
older ``.<stem>.<pid>.tmp<suffix>`` form."""


FAULT_VARIABLE = "MINESCAN_FAULT"
"""The test hook's environment variable (see the module docstring)."""

_REUSE_SLACK_S = 60.0
"""A live pid counts as reused only when its process started this long after the file's last change
(boot time is read in whole seconds, and a clock step must not make a live writer look stale)."""


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
    sweep_stale_temporaries(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        if not temporary.is_file():
            raise AtomicWriteError(f"cannot write {path}: the writer left no file")
        moves = [(temporary.with_suffix(s), path.with_suffix(s)) for s in sidecars] + [(temporary, path)]
        for written, _ in moves:
            if written.is_file():
                _sync(written)
        _fault("after-temp", path)
        for written, final in moves:
            if written.is_file():
                os.replace(written, final)
            elif final != path:
                final.unlink(missing_ok=True)
        _sync_folder(path.parent)
        _fault("after-rename", path)
    except OSError as exc:
        raise _error(path, exc) from exc
    finally:
        _remove_temporaries(temporary)


def sweep_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` (its sidecars' included) whose writer no longer runs; return them.

    Best effort: a file that cannot be examined or removed is left alone.
    """
    path = Path(path)
    names = (
        re.compile(rf"^\.{re.escape(path.name)}\.(?P<pid>\d+)-[0-9a-f]+\.tmp(\.[\w-]+)?$"),
        re.compile(rf"^\.{re.escape(path.stem)}\.(?P<pid>\d+)\.tmp{re.escape(path.suffix)}[\w-]*$"),  # the older form
    )
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed  # no folder yet: nothing to sweep
    for entry in entries:
        match = next((m for m in (n.match(entry.name) for n in names) if m), None)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or not _writer_gone(int(match["pid"]), entry.stat().st_mtime):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _writer_gone(pid: int, modified: float) -> bool:
    """Whether process ``pid``, which last changed a file at ``modified``, can no longer be writing it."""
    if pid <= 0:
        return False  # not a name temporary_path makes: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OverflowError:
        return True  # no process has such a pid
    except OSError:
        return False
    started = _process_start(pid)
    return started is not None and started > modified + _REUSE_SLACK_S


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds; inf for a zombie), or None where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            fields = stream.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as stream:
            boot = next(float(line.split()[1]) for line in stream if line.startswith(b"btime "))
        if fields[0] == b"Z":
            return float("inf")  # dead, not yet reaped by its parent
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _fault(point: str, path: Path) -> None:
    """The test hook (see the module docstring): SIGKILL this process at ``point`` when asked to."""
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    name, _, pattern = wanted.partition(":")
    if name == point and (not pattern or fnmatch.fnmatch(path.name, pattern)):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # SIGKILL is delivered at once; never go on writing


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
