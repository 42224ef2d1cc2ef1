"""A detector whose answers are known: bright rectangles, as an ONNX graph.

It exists so that tests and the demo can check every position, count and
class the scan reports; it is a fixture, not a mining model.  The graph is
plain ONNX (opset 17) in the TF Object Detection API contract and runs per
image with any batch, height and width:

1. ``mask`` = max(R, G, B) > threshold.
2. Top-left corners are mask pixels whose upper and left neighbours are off;
   bottom-right corners likewise with lower and right.  Pixels outside the
   tile count as off, so a rectangle cut by the tile edge is found cut.
3. TopK picks up to K corners of each kind; every (top-left, bottom-right)
   pair is tested with an integral image: the pair is a rectangle when the
   box between the corners is entirely on.  Separate solid rectangles have
   exactly one such partner per top-left corner.
4. Class 1 when the box's mean red >= mean blue, else class 2; the score is
   (mean red + mean blue) / 510.  Outputs are sorted by score and padded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from minescan.export.onnx_metadata import write_metadata
from minescan.model.metadata import ModelMetadata

LABELS = {1: "red_square", 2: "blue_square"}


class _Graph:
    """Accumulates nodes with generated names; one short method per ONNX op used."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, dtype=np.int64) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        name = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name + "_node", **attrs))
        return name

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs) -> list[str]:
        names = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0] + "_node", **attrs))
        return names


def _shift(g: _Graph, mask: str, axis: int, forward: bool) -> str:
    """mask shifted by one pixel along ``axis`` (1 = rows, 2 = columns), zeros entering."""
    pads = [0] * 6
    pads[axis if forward else axis + 3] = 1
    padded = g.op("Pad", mask, g.const(pads), g.const(0.0, np.float32))
    start, end = (0, -1) if forward else (1, 2**62)
    return g.op("Slice", padded, g.const([start]), g.const([end]), g.const([axis]))


def _corners(g: _Graph, mask: str, forward: bool, k: str, width: str) -> tuple[str, str, str]:
    """(valid, row, col) of up to K corners, each [N, K]."""
    on = g.const(1.0, np.float32)
    vert = g.op("Sub", on, _shift(g, mask, 1, forward))
    horiz = g.op("Sub", on, _shift(g, mask, 2, forward))
    corner = g.op("Mul", g.op("Mul", mask, vert), horiz)
    flat = g.op("Reshape", corner, g.const([0, -1]))
    values, index = g.ops("TopK", [flat, k], 2, axis=1, largest=1, sorted=1)
    valid = g.op("Greater", values, g.const(0.5, np.float32))
    return valid, g.op("Div", index, width), g.op("Mod", index, width)


def _integral(g: _Graph, plane: str) -> str:
    """Summed-area table of an [N, H, W] plane, float64 [N, (H+1)*(W+1)] (exact for 8-bit sums)."""
    wide = g.op("Cast", plane, to=TensorProto.DOUBLE)
    padded = g.op("Pad", wide, g.const([0, 1, 1, 0, 0, 0]), g.const(0.0, np.float64))
    summed = g.op("CumSum", g.op("CumSum", padded, g.const(1)), g.const(2))
    return g.op("Reshape", summed, g.const([0, -1]))


def _box_sum(g: _Graph, table: str, stride: str, y0: str, x0: str, y1: str, x1: str) -> str:
    """Sum of a plane over boxes [y0, y1) x [x0, x1) given as equally shaped [N, M] index tensors."""

    def at(y: str, x: str) -> str:
        return g.op("GatherElements", table, g.op("Add", g.op("Mul", y, stride), x), axis=1)

    return g.op("Add", g.op("Sub", g.op("Sub", at(y1, x1), at(y0, x1)), at(y1, x0)), at(y0, x0))


def build_square_detector(
    *,
    max_detections: int = 100,
    threshold: float = 180.0,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    labels: dict[int, str] | None = None,
) -> onnx.ModelProto:
    """The bright-rectangle detector as an ONNX model in the OD API contract.

    ``batch`` and ``size`` fix the input's batch and (height, width) dims;
    None leaves them symbolic.
    """
    g = _Graph()
    k = g.const([max_detections])
    image = g.op("Cast", "input_tensor", to=TensorProto.FLOAT)
    red, green, blue = (g.op("Squeeze", c, g.const([3])) for c in g.ops("Split", [image], 3, axis=3))
    brightest = g.op("Max", red, green, blue)
    mask = g.op("Cast", g.op("Greater", brightest, g.const(threshold, np.float32)), to=TensorProto.FLOAT)

    shape = g.op("Shape", "input_tensor")
    height = g.op("Gather", shape, g.const(1), axis=0)
    width = g.op("Gather", shape, g.const(2), axis=0)
    stride = g.op("Add", width, g.const(1))

    tl_ok, y0, x0 = _corners(g, mask, True, k, width)
    br_ok, br_y, br_x = _corners(g, mask, False, k, width)
    y1, x1 = g.op("Add", br_y, g.const(1)), g.op("Add", br_x, g.const(1))

    # Every top-left (axis 1) against every bottom-right (axis 2), flattened to [N, K*K].
    col, row = g.const([2]), g.const([1])
    py0, px0 = g.op("Unsqueeze", y0, col), g.op("Unsqueeze", x0, col)
    py1, px1 = g.op("Unsqueeze", y1, row), g.op("Unsqueeze", x1, row)
    zero = g.op("Mul", g.op("Add", py0, py1), g.const(0))  # [N, K, K] zeros to broadcast with

    def pairwise(t: str) -> str:
        return g.op("Reshape", g.op("Add", t, zero), g.const([0, -1]))

    fy0, fx0, fy1, fx1 = (pairwise(t) for t in (py0, px0, py1, px1))
    mask_table = _integral(g, mask)
    on_count = _box_sum(g, mask_table, stride, fy0, fx0, fy1, fx1)
    area = g.op("Cast", g.op("Mul", g.op("Sub", fy1, fy0), g.op("Sub", fx1, fx0)), to=TensorProto.DOUBLE)
    ordered = g.op("And", g.op("Greater", fy1, fy0), g.op("Greater", fx1, fx0))
    tl_int, br_int = (g.op("Cast", t, to=TensorProto.INT64) for t in (tl_ok, br_ok))
    both_ok = g.op("Greater", pairwise(g.op("Mul", g.op("Unsqueeze", tl_int, col), g.op("Unsqueeze", br_int, row))), g.const(0))
    solid = g.op("And", g.op("And", ordered, both_ok), g.op("Equal", on_count, area))
    pair_ok = g.op("Reshape", g.op("Cast", solid, to=TensorProto.FLOAT), g.op("Concat", g.const([0]), k, k, axis=0))
    partner = g.op("ArgMax", pair_ok, axis=2, keepdims=0)
    found = g.op("ReduceMax", pair_ok, axes=[2], keepdims=0)  # axes is an attribute until opset 18
    by1 = g.op("GatherElements", y1, partner, axis=1)
    bx1 = g.op("GatherElements", x1, partner, axis=1)

    box_area = g.op("Cast", g.op("Mul", g.op("Sub", by1, y0), g.op("Sub", bx1, x0)), to=TensorProto.DOUBLE)
    box_area = g.op("Max", box_area, g.const(1.0, np.float64))
    red_sum = _box_sum(g, _integral(g, red), stride, y0, x0, by1, bx1)
    blue_sum = _box_sum(g, _integral(g, blue), stride, y0, x0, by1, bx1)
    score = g.op("Div", g.op("Div", g.op("Add", red_sum, blue_sum), box_area), g.const(510.0, np.float64))
    score = g.op("Mul", g.op("Cast", score, to=TensorProto.FLOAT), found)
    klass = g.op("Where", g.op("GreaterOrEqual", red_sum, blue_sum), g.const(1.0, np.float32), g.const(2.0, np.float32))

    top_scores, order = g.ops("TopK", [score, k], 2, axis=1, largest=1, sorted=1)
    g.op("Identity", top_scores, out="detection_scores")
    kept = g.op("Cast", g.op("Greater", top_scores, g.const(0.0, np.float32)), to=TensorProto.FLOAT)
    g.op("Mul", g.op("GatherElements", klass, order, axis=1), kept, out="detection_classes")
    g.op("ReduceSum", kept, g.const([1]), keepdims=0, out="num_detections")

    h_f = g.op("Cast", height, to=TensorProto.FLOAT)
    w_f = g.op("Cast", width, to=TensorProto.FLOAT)
    coords = []
    for value, scale in ((y0, h_f), (x0, w_f), (by1, h_f), (bx1, w_f)):
        picked = g.op("Cast", g.op("GatherElements", value, order, axis=1), to=TensorProto.FLOAT)
        coords.append(g.op("Unsqueeze", g.op("Mul", g.op("Div", picked, scale), kept), col))
    g.op("Concat", *coords, axis=2, out="detection_boxes")

    n = batch if batch else "batch"
    h, w = size if size else ("height", "width")
    graph = helper.make_graph(
        g.nodes,
        "square_detector",
        [helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [n, h, w, 3])],
        [
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [n, max_detections, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [n, max_detections]),
            helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, [n, max_detections]),
            helper.make_tensor_value_info("num_detections", TensorProto.FLOAT, [n]),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="minescan")
    model.ir_version = 8
    write_metadata(model, ModelMetadata(labels=labels or LABELS, input_size=size))
    onnx.checker.check_model(model, full_check=True)
    return model


def save_square_detector(path: str | os.PathLike[str], **options) -> Path:
    """Build the detector (see :func:`build_square_detector`) and write it to ``path``."""
    path = Path(path)
    onnx.save(build_square_detector(**options), str(path))
    return path
