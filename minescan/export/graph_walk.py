"""Small reads of an ONNX graph that the graph rewrites (control flow, free batch, proposal budget) share."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper


def constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every value the graph fixes itself: its initializers and its ``Constant`` nodes' tensors, by name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    """The graphs a node carries (a Loop's body, an If's branches, a Scan's body)."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs
