"""Which ONNX operators TensorRT's ONNX parser accepts, and a check of a graph against them.

The operator set and the restrictions below are facts from onnx-tensorrt's
operator support matrix (``docs/operators.md``, "Operator Support Matrix",
TensorRT 10.x; the version read was the TensorRT 10.15 table, opsets 9 to
24).  Only operators marked "Y" are listed.  Of the restrictions, those the
detector graphs can run into are checked: the Resize coordinate
transformation modes (tf2onnx's ``tf_crop_and_resize`` is not one of them),
``TopK``'s ``K`` (a build-time constant below 3840; the ``--target
tensorrt`` rewrite splits a larger one, :func:`minescan.export.topk.split_large_topk`,
so what is left here is a TopK it could not rewrite), Q/DQ zero points (must
be zero) and ``Loop`` scan outputs (no dynamic length).  :func:`tensorrt_problems`
walks subgraphs too, so an unsupported op inside a ``Loop`` body is found.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
    RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
    Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)
"""ONNX operators TensorRT 10.x parses (onnx-tensorrt's operator support matrix, "Y" rows)."""

RESIZE_MODES: frozenset[str] = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
"""Resize ``coordinate_transformation_mode`` values the parser supports."""

TOPK_MAX_K = 3840  # K must be a build-time constant below this


def _nodes(graph: onnx.GraphProto, where: str = "") -> Iterator[tuple[onnx.NodeProto, str]]:
    """Every node of ``graph`` and its subgraphs, with a path naming the enclosing nodes."""
    for node in graph.node:
        yield node, where
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs):
                yield from _nodes(subgraph, f"{where}{node.name}/{attribute.name}/")


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    return None


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT 10.x's ONNX parser would reject ``model``, one line per node ([] when it would not)."""
    problems = []
    for node, where in _nodes(model.graph):
        name = f"{node.op_type} node {where}{node.name!r}"
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            problems.append(f"{name}: operator not supported by TensorRT's ONNX parser")
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize":
            mode = attributes.get("coordinate_transformation_mode", b"half_pixel").decode()
            if mode not in RESIZE_MODES:
                problems.append(f"{name}: coordinate_transformation_mode {mode!r} is not supported")
        elif node.op_type == "TopK":
            k = _constant(model.graph, node.input[1])
            if k is None or int(k.reshape(-1)[0]) >= TOPK_MAX_K:
                problems.append(f"{name}: K must be an initializer below {TOPK_MAX_K}")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zero_point = _constant(model.graph, node.input[2])
            if zero_point is None or zero_point.any():
                problems.append(f"{name}: zero point must be zero")
        elif node.op_type == "Loop" and not _constant_trip_count(model.graph, node):
            problems.append(f"{name}: scan outputs of a Loop without a constant trip count have a dynamic length")
    return problems


def _constant_trip_count(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    return bool(node.input and node.input[0]) and _constant(graph, node.input[0]) is not None
