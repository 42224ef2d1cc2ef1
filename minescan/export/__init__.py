"""Export a TF Object Detection API SavedModel to ONNX and check the export.

:func:`export_onnx` converts a SavedModel whose ``serving_default`` meets the
detector contract (:mod:`minescan.model.contract`) into an ONNX file with
exactly the contract's outputs and minescan's metadata; :func:`verify_export`
runs both on the same tiles and reports how closely they agree.
:mod:`testkit.fixture_model` builds a random-weight Faster R-CNN
SavedModel for tests and benchmarks.

TensorFlow and tf2onnx (the ``export`` extra) are imported only when a
SavedModel is loaded or converted, so importing this package does not need
them.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "DEFAULT_PREPROCESSING": "minescan.export.convert",
    "ExportReport": "minescan.export.convert",
    "export_onnx": "minescan.export.convert",
    "run_onnx": "minescan.export.detections",
    "run_saved_model": "minescan.export.detections",
    "synthetic_tiles": "minescan.export.detections",
    "BatchDetections": "minescan.model.detections",
    "ExportError": "minescan.export.errors",
    "ParityReport": "minescan.export.verify",
    "compare_detections": "minescan.export.verify",
    "verify_export": "minescan.export.verify",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``import minescan.export`` loads neither onnx nor TensorFlow."""
    if name not in _NAMES:
        raise AttributeError(f"module 'minescan.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
