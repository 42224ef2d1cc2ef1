"""Run a detector in the TF Object Detection API contract on a batch of tiles.

:func:`load_detector` picks the backend for a model file; every backend
implements :class:`Detector`.
"""

from __future__ import annotations

import os

from minescan.engine.contract import ContractError, ModelSignature
from minescan.engine.detections import TileDetections
from minescan.engine.detector import Detector, DetectorInputError
from minescan.engine.metadata import ModelMetadata
from minescan.engine.onnxruntime_backend import ModelLoadError, OnnxRuntimeDetector


def load_detector(path: str | os.PathLike[str], *, threads: int | None = None, max_batch: int | None = None) -> Detector:
    """Load and contract-check the model at ``path`` on the default backend (ONNX Runtime, CPU)."""
    return OnnxRuntimeDetector(path, threads=threads, max_batch=max_batch)


__all__ = [
    "ContractError",
    "Detector",
    "DetectorInputError",
    "ModelLoadError",
    "ModelMetadata",
    "ModelSignature",
    "OnnxRuntimeDetector",
    "TileDetections",
    "load_detector",
]
