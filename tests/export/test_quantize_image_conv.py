"""Which convolutions INT8 leaves in FP32: only a shallow convolution of the RGB image itself."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from minescan.export.quantize import quantize_int8


def _two_conv_model(stem_kernel: int) -> onnx.ModelProto:
    """uint8 NHWC image -> float NCHW -> Conv(3 -> 16, stem_kernel) -> Relu -> Conv(16 -> 16, 1x1)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (16, 3, stem_kernel, stem_kernel)).astype(np.float32), "stem_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16, 16, 1, 1)).astype(np.float32), "next_w"),
    ]
    pad = stem_kernel // 2
    nodes = [
        helper.make_node("Cast", ["input_tensor"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["image_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["image_nchw", "stem_w"], ["stem"], name="stem", pads=[pad] * 4),
        helper.make_node("Relu", ["stem"], ["stem_relu"]),
        helper.make_node("Conv", ["stem_relu", "next_w"], ["features"], name="next"),
    ]
    graph = helper.make_graph(
        nodes, "two_convs",
        [helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 16, 32, 32])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantized_weights(model: onnx.ModelProto) -> set[str]:
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dequantized}


@pytest.mark.parametrize("stem_kernel, stem_quantized", [(3, False), (7, True)])
def test_only_a_shallow_image_convolution_stays_fp32(stem_kernel, stem_quantized):
    # 3x3 on RGB: 27 products per output, slower as QLinearConv; a 7x7 ResNet stem (147) is faster quantized.
    tiles = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    quantized = quantize_int8(_two_conv_model(stem_kernel), tiles, symmetric_activations=False)
    assert _quantized_weights(quantized) == ({"stem", "next"} if stem_quantized else {"next"})
