"""Write a file all at once or not at all.

Bytes go to a temporary file in the target's directory, are flushed to disk,
then renamed over the target (``os.replace`` is atomic on one file system), so
an interrupted or failed write leaves the old file, or none, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from minescan.export.errors import ExportError


def write_atomically(path: str | os.PathLike[str], data: bytes | memoryview) -> int:
    """Write ``data`` to ``path`` atomically; return its size; raise :class:`ExportError` naming the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc.strerror}") from exc
    return memoryview(data).nbytes
