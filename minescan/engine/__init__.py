"""Run a detector in the TF Object Detection API contract on a batch of tiles.

:func:`load_detector` picks the backend for a model file
(:mod:`minescan.engine.backends`); every backend implements :class:`Detector`.
The TensorRT backend and its CUDA runtime are imported only when an engine
file is loaded, so the rest works without TensorRT or cuda-python.
"""

from __future__ import annotations

import os

import onnxruntime as ort

from minescan.engine.backends import BACKENDS, BackendError, TensorRTUnavailableError, check_providers, plan_backend
from minescan.model.contract import ContractError, ModelSignature
from minescan.model.detections import TileDetections
from minescan.engine.detector import Detector, DetectorInputError
from minescan.model.metadata import ModelMetadata
from minescan.engine.onnxruntime_backend import ModelLoadError, OnnxRuntimeDetector


def load_detector(
    path: str | os.PathLike[str],
    *,
    backend: str = "cpu",
    threads: int | None = None,
    workers: int | None = None,
    max_batch: int | None = None,
) -> Detector:
    """Load and contract-check the model at ``path`` on ``backend`` (one of :data:`BACKENDS`).

    ``auto`` takes the best backend this machine offers and sets the
    detector's ``notice`` when that is the CPU; an explicit GPU backend that
    cannot run raises :class:`BackendError`.  On the CPU, ``threads`` (intra-op
    threads per call) and ``workers`` (concurrent calls) default to filling the
    cores (:func:`~minescan.engine.onnxruntime_backend.cpu_split`).
    """
    plan = plan_backend(path, backend, ort.get_available_providers())
    if plan.engine:
        from minescan.engine.tensorrt_backend import TensorRTDetector

        return TensorRTDetector(path, max_batch=max_batch)
    detector = OnnxRuntimeDetector(path, threads=threads, workers=workers, max_batch=max_batch, providers=plan.providers)
    detector.notice = check_providers(plan, detector.providers, path)
    return detector


__all__ = [
    "BACKENDS",
    "BackendError",
    "ContractError",
    "Detector",
    "DetectorInputError",
    "ModelLoadError",
    "ModelMetadata",
    "ModelSignature",
    "OnnxRuntimeDetector",
    "TensorRTUnavailableError",
    "TileDetections",
    "load_detector",
]
