"""A tile classifier whose answers are known: the share of bright pixels, as an ONNX graph.

Like the square detector, it exists so tests can check every cell of a
heatmap: for each image, ``p = min(1, 4 * share of pixels whose brightest band
exceeds 180)`` and the outputs are ``[1 - p, p]`` (classes 1 ``background``,
2 ``bright``).  Input uint8 [N, H, W, 3] (``size`` fixes H and W), output
``probabilities`` float32 [N, 2].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from minescan.export.onnx_metadata import write_metadata
from minescan.model.metadata import ModelMetadata

LABELS = {1: "background", 2: "bright"}


def build_bright_classifier(size: int = 64, threshold: float = 180.0) -> onnx.ModelProto:
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
              (("threshold", threshold), ("four", 4.0), ("one", 1.0), ("zero", 0.0))]
    consts.append(numpy_helper.from_array(np.array([3], np.int64), "channel_axis"))
    consts.append(numpy_helper.from_array(np.array([1, 2], np.int64), "pixel_axes"))
    consts.append(numpy_helper.from_array(np.array([1], np.int64), "class_axis"))
    nodes = [
        helper.make_node("Cast", ["input_tensor"], ["image"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["image", "channel_axis"], ["brightest"], keepdims=0),
        helper.make_node("Greater", ["brightest", "threshold"], ["bright_mask"]),
        helper.make_node("Cast", ["bright_mask"], ["bright"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["bright", "pixel_axes"], ["share"], keepdims=0),
        helper.make_node("Mul", ["share", "four"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "zero", "one"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Unsqueeze", ["q", "class_axis"], ["q1"]),
        helper.make_node("Unsqueeze", ["p", "class_axis"], ["p1"]),
        helper.make_node("Concat", ["q1", "p1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "bright_classifier",
        [helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    write_metadata(model, ModelMetadata(labels=LABELS, input_size=(size, size)))
    return model


def save_bright_classifier(path: str | os.PathLike[str], **options) -> Path:
    path = Path(path)
    onnx.save(build_bright_classifier(**options), str(path))
    return path
