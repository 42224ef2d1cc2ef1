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

from minescan.export.convert import DEFAULT_PREPROCESSING, ExportReport, export_onnx
from minescan.export.detections import run_onnx, run_saved_model, synthetic_tiles
from minescan.model.detections import BatchDetections
from minescan.export.errors import ExportError
from minescan.export.verify import ParityReport, compare_detections, verify_export

__all__ = [
    "BatchDetections",
    "DEFAULT_PREPROCESSING",
    "ExportError",
    "ExportReport",
    "ParityReport",
    "compare_detections",
    "export_onnx",
    "run_onnx",
    "run_saved_model",
    "synthetic_tiles",
    "verify_export",
]
