"""Lazy access to the optional TensorFlow and tf2onnx dependencies.

They are heavy (hundreds of MB, seconds to import) and only export needs them,
so they live in the ``export`` extra and are imported on first use; a missing
one becomes an :class:`ExportError` that says how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from minescan.export.errors import ExportError


def import_optional(name: str) -> ModuleType:
    """Import ``name`` (``tensorflow`` or ``tf2onnx``) or explain how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(
            f"{name} is not installed ({exc}); install the export extra: pip install 'minescan[export]'"
        ) from exc
