"""Lazy access to the optional TensorFlow and tf2onnx dependencies.

They are heavy (hundreds of MB, seconds to import) and only export needs them,
so they live in the ``export`` extra and are imported on first use; a missing
one becomes an :class:`ExportError` that says how to install it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from minescan.export.errors import ExportError


def import_optional(name: str) -> ModuleType:
    """Import ``name`` (``tensorflow`` or ``tf2onnx``) or explain how to install it."""
    # TensorFlow's C++ info/warning logs (oneDNN, grappler cost estimates) drown the
    # command's own output; errors still show.  A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(
            f"{name} is not installed ({exc}); install the export extra: pip install 'minescan[export]'"
        ) from exc
