"""FP16 in the graph, on the feature trunk only: what reduced precision may touch in a detector.

A Faster R-CNN spends nearly all its time in convolutions and matrix
products over feature maps (backbone, RPN head, box head), which tolerate
FP16 or INT8; the rest is small and precision-sensitive: anchor generation,
box decoding (``exp`` of deltas, products with anchor sizes), NMS, softmax and
the padded outputs.  :func:`trunk_nodes` finds the first kind from the graph's
data flow: every Conv/ConvTranspose/MatMul/Gemm and, walking upstream from
them through float tensors, the nodes producing their feature inputs.  The
walk crosses only type-preserving ops (activations, pooling, arithmetic,
reshapes, slices), so it stops where the uint8 image is cast to float and at
control flow, and it follows only the feature input of ``RoiAlign``, which
stays FP32 itself (its rois are boxes): decoding, anchors and NMS stay out,
and so does everything after the last matrix product (the logits' bias,
softmax, decoding).  Nodes whose output is read inside a subgraph (the
feature map a ``Loop``-based crop reads) stay FP32 too, because a subgraph's
outer-scope reads cannot be given a Cast.

:func:`to_float16` converts the trunk: its float initializers get FP16
copies, FP32 tensors entering it get a ``Cast`` to FP16 and its outputs that
FP32 nodes or the graph outputs read get a ``Cast`` back under their original
name, so the model's input and output types (uint8 image, float32
detections) stay.  (onnxconverter-common's ``convert_float_to_float16`` with
a node block list was tried first: it left an initializer shared between an
FP16 and an FP32 node in FP32, and ONNX Runtime rejected the model.)
:mod:`minescan.export.quantize` quantizes the trunk's Conv/MatMul nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from minescan.export.errors import ExportError

MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# Ops whose float inputs and outputs share one type, so they run in FP16 unchanged.  Cast
# (the uint8 image), Constant, control flow and the sigmoid/softmax scores are not among them.
_FP16_OPS = MATRIX_OPS | frozenset({
    "Relu", "LeakyRelu", "Clip", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "Pad", "Where", "Identity", "Resize",
})
_PASS_THROUGH = frozenset({"RoiAlign"})  # kept FP32 (rois are boxes), but its feature input (0) is followed
_FP32_ONLY_INPUTS = {"Resize": (1, 2)}  # inputs an op's schema fixes to float32 (Resize roi and scales)
_FLOAT, _FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@dataclass(frozen=True)
class Float16Report:
    """What :func:`to_float16` converted and what it kept in FP32."""

    converted_nodes: int
    kept_fp32_nodes: int
    kept_fp32_ops: tuple[str, ...]  # op types with at least one FP32 node, sorted

    def format(self) -> str:
        """One readable line."""
        return (f"fp16: {self.converted_nodes} trunk nodes in FP16, {self.kept_fp32_nodes} kept FP32 "
                f"({', '.join(self.kept_fp32_ops)}); input and outputs keep their types")


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed top-level node a unique name in place (block lists go by name)."""
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}__minescan_{index}"
            if node.name in taken:
                raise ExportError(f"cannot name node {index}: {node.name!r} is taken")


def trunk_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the top-level nodes on the feature trunk (see the module docstring)."""
    float_tensors = tensors_of_type(model, _FLOAT)
    producer = {output: node for node in model.graph.node for output in node.output}
    read_in_subgraphs = _outer_reads(model.graph)

    trunk: set[str] = set()
    seen: set[str] = set()
    pending = [node for node in model.graph.node if node.op_type in MATRIX_OPS]
    while pending:
        node = pending.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _PASS_THROUGH:
            inputs = node.input[:1]
        else:
            trunk.add(node.name)
            inputs = node.input
        for name in inputs:
            source = producer.get(name)
            if source is None or name not in float_tensors or name in read_in_subgraphs:
                continue
            if source.op_type in _FP16_OPS or source.op_type in _PASS_THROUGH:
                pending.append(source)
    return trunk


def tensors_of_type(model: onnx.ModelProto, elem_type: int) -> set[str]:
    """Names of the top-level tensors (after shape inference) and initializers of ``elem_type``."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name for v in values if v.type.tensor_type.elem_type == elem_type} | {
        t.name for t in model.graph.initializer if t.data_type == elem_type
    }


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Tensor names read by nodes inside ``graph``'s subgraphs (including names they define themselves)."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs):
                names |= {name for inner in subgraph.node for name in inner.input}
                names |= _outer_reads(subgraph)
    return names


def to_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Float16Report]:
    """``model`` with its feature trunk in FP16 and everything else in FP32, and what was kept."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    name_nodes(converted)
    trunk = trunk_nodes(converted)
    if not trunk:
        raise ExportError("no Conv/MatMul/Gemm node found to run in FP16")
    graph = converted.graph
    float_tensors = tensors_of_type(converted, _FLOAT)
    initializers = {t.name: t for t in graph.initializer}
    trunk_outputs = {o for node in graph.node if node.name in trunk for o in node.output if o in float_tensors}
    fp16_names: dict[str, str] = {}  # FP32 tensor -> its FP16 counterpart
    casts: list[onnx.NodeProto] = []

    def half(name: str) -> str:
        if name not in fp16_names:
            fp16_names[name] = f"{name}/fp16"
            if name in initializers:
                values = numpy_helper.to_array(initializers[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(values, fp16_names[name]))
            else:
                casts.append(onnx.helper.make_node("Cast", [name], [fp16_names[name]], f"{name}/to_fp16", to=_FLOAT16))
        return fp16_names[name]

    for node in graph.node:
        if node.name not in trunk:
            continue
        fixed = _FP32_ONLY_INPUTS.get(node.op_type, ())
        for index, name in enumerate(node.input):
            if name in trunk_outputs:
                node.input[index] = f"{name}/fp16"
            elif name in float_tensors and index not in fixed:
                node.input[index] = half(name)
        for index, name in enumerate(node.output):
            if name in trunk_outputs:
                node.output[index] = f"{name}/fp16"
                # FP32 readers (and graph outputs) keep the original name through a Cast back.
                casts.append(onnx.helper.make_node("Cast", [f"{name}/fp16"], [name], f"{name}/to_fp32", to=_FLOAT))
    graph.node.extend(casts)
    del graph.value_info[:]
    sorted_model = _toposorted(converted)
    return sorted_model, Float16Report(
        converted_nodes=len(trunk),
        kept_fp32_nodes=len(model.graph.node) - len(trunk),
        kept_fp32_ops=tuple(sorted({node.op_type for node in model.graph.node if node.name not in trunk} - {""})),
    )


def _toposorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with unused nodes dropped and nodes in topological order (onnx-graphsurgeon)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.metadata_props.extend(model.metadata_props)
    return onnx.shape_inference.infer_shapes(result, strict_mode=False)
