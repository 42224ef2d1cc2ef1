"""Run a detector in the TF Object Detection API contract on a batch of tiles.

:func:`load_detector` picks the backend for a model file
(:mod:`minescan.engine.backends`); every backend implements
:class:`~minescan.engine.detector.Detector`.  ONNX Runtime is imported when a
model is loaded, TensorRT and its CUDA runtime only when an engine file is,
so importing this package costs nothing and the rest works without them.
"""

from __future__ import annotations

import os

from minescan.engine.backends import BACKENDS, BackendError, TensorRTUnavailableError, check_providers, plan_backend
from minescan.engine.detector import Detector, DetectorInputError


def onnxruntime():
    """The onnxruntime module, or :class:`BackendError` saying which extra installs it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError(
            f"ONNX Runtime is not installed ({exc}): pip install 'minescan[cpu]', "
            "or 'minescan[gpu]' on a machine with an NVIDIA GPU"
        ) from exc
    return ort


def load_detector(
    path: str | os.PathLike[str],
    *,
    backend: str = "cpu",
    threads: int | None = None,
    workers: int | None = None,
    max_batch: int | None = None,
    planning_only: bool = False,
) -> Detector:
    """Load and contract-check the model at ``path`` on ``backend`` (one of :data:`BACKENDS`).

    ``auto`` takes the best backend this machine offers; an explicit GPU
    backend that cannot run raises :class:`BackendError`, and ``auto`` on a
    machine whose GPU package cannot reach its GPU sets the detector's
    ``notice``.  On the CPU, ``threads`` (intra-op threads per call) and
    ``workers`` (concurrent calls) default to filling the cores
    (:meth:`minescan.defaults.Defaults.cpu_split`).  ``planning_only``: an ONNX
    model read for its contract and metadata only (no graph optimisation, no
    probe call; a Ray run's driver, which plans while its workers scan).
    """
    ort = onnxruntime()
    plan = plan_backend(path, backend, ort.get_available_providers())
    if plan.engine:
        from minescan.engine.tensorrt_backend import TensorRTDetector

        return TensorRTDetector(path, max_batch=max_batch)
    from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector

    detector = OnnxRuntimeDetector(path, threads=threads, workers=workers, max_batch=max_batch, providers=plan.providers,
                                   planning_only=planning_only)
    detector.notice = check_providers(plan, detector.providers, path)
    return detector


__all__ = ["BACKENDS", "BackendError", "Detector", "DetectorInputError", "TensorRTUnavailableError", "load_detector"]
