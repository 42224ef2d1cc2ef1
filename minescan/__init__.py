"""minescan: scan whole Sentinel-2 scenes for mining sites.

Three parts: :mod:`minescan.engine` runs a detector in the TF Object Detection
API contract, :mod:`minescan.tiling` cuts scenes into tiles and stitches the
detections back into georeferenced results, :mod:`minescan.export` turns a
TensorFlow SavedModel into ONNX and TensorRT-ready graphs.
"""

__version__ = "0.1.0"
