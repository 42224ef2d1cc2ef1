"""Static control flow inlined: a ``Loop`` that runs once and an ``If`` whose condition is a constant.

The OD API's exporter preprocesses each image of the batch in a
``tf.map_fn`` (tf2onnx: a ``Loop`` over the batch whose scan outputs are the
resized images and their true shapes), and its ``keep_aspect_ratio_resizer``
picks the new size with a ``tf.cond`` on the image shape (an ``If`` inside
that Loop's body).  With the batch fixed at 1 the Loop's trip count is the
constant 1, and once the input's height and width are fixed constant folding
turns the If's condition into a constant, so both can be replaced by the
nodes they would run:

* :func:`unroll_single_trip_loops`: each top-level ``Loop`` whose trip count
  is the constant 1 (and whose condition input is absent or constant true)
  becomes its body, once: the iteration number is bound to 0, the condition
  and loop-carried inputs to the Loop's inputs, each loop-carried output is
  the body's (an ``Identity``) and each scan output the body's with a leading
  axis of 1 (an ``Unsqueeze``);
* :func:`inline_constant_ifs`: each top-level ``If`` whose condition is a
  constant becomes the branch it takes, its outputs bound the same way.

Both work on the ``ModelProto`` in place and rely on ONNX's rule that a
subgraph's names never shadow an outer scope's, so the inlined nodes keep
their names; nested subgraphs (an ``If`` inside the unrolled body) see the
rebound names too.  Run constant folding between rounds: unrolling is what
exposes the If's condition to folding.  :func:`drop_identities` then removes
the binding ``Identity`` nodes.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from minescan.export.errors import ExportError
from minescan.export.graph_walk import constants as _constants, subgraphs as _subgraphs


def unroll_single_trip_loops(model: onnx.ModelProto) -> int:
    """Replace each top-level ``Loop`` that runs exactly once by its body; return how many."""
    return _replace_nodes(model, "Loop", _unrolled_loop)


def inline_constant_ifs(model: onnx.ModelProto) -> int:
    """Replace each top-level ``If`` with a constant condition by the branch it takes; return how many."""
    return _replace_nodes(model, "If", _inlined_if)


def drop_identities(model: onnx.ModelProto) -> int:
    """Remove top-level ``Identity`` nodes that do not produce a graph output; return how many."""
    graph = model.graph
    outputs = {value.name for value in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs and node.input[0]:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    if not rename:
        return 0
    for node in kept:
        _rename_inputs(node, rename)
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


_Replacement = Callable[[onnx.NodeProto, Mapping[str, np.ndarray], int], "list[onnx.NodeProto] | None"]


def _replace_nodes(model: onnx.ModelProto, op_type: str, replacement: _Replacement) -> int:
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    constants = _constants(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        inlined = replacement(node, constants, opset) if node.op_type == op_type else None
        if inlined is None:
            nodes.append(node)
            continue
        for subgraph in _subgraphs(node):
            _adopt(graph, subgraph)
        nodes.extend(inlined)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _unrolled_loop(node: onnx.NodeProto, constants: Mapping[str, np.ndarray], opset: int) -> list[onnx.NodeProto] | None:
    trip_count = constants.get(node.input[0]) if node.input and node.input[0] else None
    if trip_count is None or trip_count.size != 1 or int(trip_count.reshape(-1)[0]) != 1:
        return None
    condition = node.input[1] if len(node.input) > 1 else ""
    if condition and (condition not in constants or not bool(constants[condition].reshape(-1)[0])):
        return None
    body = _attribute(node, "body")
    carried = len(node.input) - 2
    prefix = _unique_prefix(node)
    iteration = prefix + "iteration"
    true = prefix + "condition"
    nodes = [
        helper.make_node("Constant", [], [iteration], name=iteration, value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Constant", [], [true], name=true, value=numpy_helper.from_array(np.array(True))),
    ]
    rename = {body.input[0].name: iteration, body.input[1].name: condition or true}
    rename.update({value.name: outer for value, outer in zip(body.input[2:], node.input[2:])})
    nodes.extend(_renamed_copies(body.node, rename))
    results = [rename.get(value.name, value.name) for value in body.output[1:]]
    for result, output in zip(results[:carried], node.output[:carried]):
        if output:
            nodes.append(helper.make_node("Identity", [result], [output], name=f"{prefix}{output}"))
    axes = prefix + "axes"
    scans = [(result, output) for result, output in zip(results[carried:], node.output[carried:]) if output]
    if scans and opset >= 13:
        nodes.append(helper.make_node("Constant", [], [axes], name=axes, value=numpy_helper.from_array(np.array([0], np.int64))))
    for result, output in scans:
        inputs = [result, axes] if opset >= 13 else [result]
        attrs = {} if opset >= 13 else {"axes": [0]}
        nodes.append(helper.make_node("Unsqueeze", inputs, [output], name=f"{prefix}{output}", **attrs))
    return nodes


def _inlined_if(node: onnx.NodeProto, constants: Mapping[str, np.ndarray], opset: int) -> list[onnx.NodeProto] | None:
    condition = constants.get(node.input[0])
    if condition is None or condition.size != 1:
        return None
    branch = _attribute(node, "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch")
    taken = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
    # Only the taken branch is adopted: drop the other so _replace_nodes does not move its initializers.
    for attribute in list(node.attribute):
        if attribute.type == onnx.AttributeProto.GRAPH and attribute.name != taken:
            node.attribute.remove(attribute)
    prefix = _unique_prefix(node)
    nodes = list(_renamed_copies(branch.node, {}))
    for result, output in zip(branch.output, node.output):
        if output:
            nodes.append(helper.make_node("Identity", [result.name], [output], name=f"{prefix}{output}"))
    return nodes




def _attribute(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.g
    raise ExportError(f"{node.op_type} node {node.name!r} has no {name} attribute")




def _adopt(graph: onnx.GraphProto, subgraph: onnx.GraphProto) -> None:
    """Move ``subgraph``'s initializers and value infos into ``graph`` (names are unique across scopes)."""
    taken = {init.name for init in graph.initializer}
    for init in subgraph.initializer:
        if init.name in taken:
            raise ExportError(f"cannot inline a subgraph: initializer {init.name!r} exists in the outer graph")
        graph.initializer.append(init)
    known = {value.name for value in graph.value_info}
    graph.value_info.extend(value for value in subgraph.value_info if value.name not in known)


def _unique_prefix(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]}__inlined/"


def _renamed_copies(nodes: Iterable[onnx.NodeProto], rename: Mapping[str, str]) -> Iterable[onnx.NodeProto]:
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_inputs(copy, rename)
        yield copy


def _rename_inputs(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename ``node``'s inputs, and outer-scope references in its subgraphs, through ``rename``."""
    for i, name in enumerate(node.input):
        if name in rename:
            node.input[i] = rename[name]
    for subgraph in _subgraphs(node):
        for inner in subgraph.node:
            _rename_inputs(inner, rename)
        for output in subgraph.output:
            if output.name in rename:  # a subgraph output may be an outer-scope value itself
                output.name = rename[output.name]
