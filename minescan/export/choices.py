"""What ``minescan export`` can make: targets, precisions and the ONNX opset (no heavy imports, for the help text)."""

from __future__ import annotations

from minescan.defaults import DEFAULTS

TARGETS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 17  # tf2onnx refuses 19+
DEFAULT_INPUT_SIZE = DEFAULTS.tile  # the scan's default tile, for models that take any size
PREPROCESSES = ("auto", "mobilenet_v2", "unit", "none")  # what a Keras classifier export bakes in before the model
