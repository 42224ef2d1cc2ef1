"""The ``--target tensorrt`` rewrite: an exported detector in ONNX that TensorRT's parser takes whole.

What tf2onnx leaves that TensorRT 10.x cannot parse, and what replaces it:

* ``crop_and_resize`` as a Loop of ``Resize(tf_crop_and_resize)`` becomes one
  ``RoiAlign`` with a mask (:mod:`minescan.export.crop_and_resize`; exact
  TF semantics, so it also removes the ONNX export's edge-box mismatch);
* control flow that only depends on the input size (the OD API's per-image
  preprocessing: a ``Loop`` over the batch from ``tf.map_fn``, whose body
  holds the ``keep_aspect_ratio_resizer``'s ``If`` on the image shape)
  becomes static once the input size is fixed: with the batch fixed at 1 the
  Loop runs once and is unrolled, and constant folding (onnx-graphsurgeon's
  ``fold_constants``, ONNX Runtime underneath) turns the If's condition into
  a constant, so the If is replaced by the branch it takes
  (:mod:`minescan.export.control_flow`); folding runs between the steps;
* NMS needs nothing: tf2onnx already emits ``NonMaxSuppression`` (and
  ``TopK``/``Gather``/``NonZero``) for TF's NMS ops, and the outputs are padded
  to the signature's fixed K by ``Pad``, all of which TensorRT parses, except
  that the OD API's ``SortByField`` sorts with ``TopK(K = Shape(x)[0])`` and
  the parser wants K as an initializer: :mod:`minescan.export.topk` pads
  ``x`` to a static bound of its length and slices the result back (same
  values and indices).  A TopK whose constant (or bounded) ``K`` is 3840 or
  more, above the parser's limit (a first stage keeping its top 6000 anchors
  before NMS), is split into rounds of smaller TopKs over what the earlier
  rounds left (:func:`minescan.export.topk.split_large_topk`; same values and
  indices, ties included).

Anything still outside TensorRT's operator matrix
(:mod:`minescan.export.tensorrt_ops`), or any ``Loop``/``If`` left, is an
:class:`~minescan.export.errors.ExportError` naming the node.  The batch
stays fixed at 1: OD API graphs compute on image 0 from the first node on, and
making them batched would mean rewriting every per-image step (proposal
NMS, gathers, padding) with a batch axis; the engine splits batches instead.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Mapping

import onnx
import onnx_graphsurgeon as gs

from minescan.export.control_flow import drop_identities, inline_constant_ifs, unroll_single_trip_loops
from minescan.export.crop_and_resize import replace_crop_and_resize_loops
from minescan.export.errors import ExportError
from minescan.export.tensorrt_ops import TOPK_MAX_K, tensorrt_problems
from minescan.export.topk import bound_dynamic_topk, split_large_topk

CONTROL_FLOW = ("Loop", "If", "Scan")
_MAX_ROUNDS = 8  # unroll/inline/fold rounds; each round removes at least one Loop or If


@dataclass(frozen=True)
class RewriteReport:
    """What :func:`rewrite_for_tensorrt` changed."""

    ops_before: Mapping[str, int]  # op type -> count, top-level nodes
    ops_after: Mapping[str, int]
    crops_replaced: int
    input_size: tuple[int, int] | None  # fixed (height, width), None when left as exported
    loops_unrolled: int = 0  # Loops with a trip count of 1 (the OD API's map over the batch)
    ifs_inlined: int = 0  # Ifs with a constant condition (the resizer's), subgraphs included
    topk_bounded: int = 0  # TopKs whose computed K was replaced by a static bound (the OD API's SortByField)
    topk_split: int = 0  # TopKs with K >= 3840 replaced by rounds of smaller ones (a pre-NMS top-k of 6000)

    @property
    def nodes_before(self) -> int:
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.ops_after.values())

    def format(self) -> str:
        """A few readable lines."""
        changed = sorted(op for op in set(self.ops_before) | set(self.ops_after) if self.ops_before.get(op) != self.ops_after.get(op))
        diff = ", ".join(f"{op} {self.ops_before.get(op, 0)}->{self.ops_after.get(op, 0)}" for op in changed)
        size = "as exported" if self.input_size is None else "fixed at {}x{}".format(*self.input_size)
        return "\n".join(
            [
                f"tensorrt rewrite: {self.nodes_before} -> {self.nodes_after} nodes, {self.crops_replaced} crop_and_resize "
                f"Loop(s) -> RoiAlign, {self.loops_unrolled} single-trip Loop(s) unrolled, {self.ifs_inlined} constant If(s) "
                f"inlined, {self.topk_bounded} TopK(s) given a constant K, {self.topk_split} TopK(s) with K >= {TOPK_MAX_K} "
                f"split into rounds, no Loop/If left, "
                f"every op in TensorRT 10's ONNX operator matrix",
                f"input size {size}; batch fixed at 1; ops changed: {diff or 'none'}",
            ]
        )


def fix_input_size(model: onnx.ModelProto, size: tuple[int, int]) -> None:
    """Set the image input's height and width to ``size`` in place."""
    height, width = size
    if height < 1 or width < 1:
        raise ExportError(f"input size must be positive, got {height}x{width}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:3], size):
        if dim.HasField("dim_value") and dim.dim_value != value:
            raise ExportError(f"the model takes {dims[1].dim_value}x{dims[2].dim_value} px, not {height}x{width}")
        dim.Clear()
        dim.dim_value = value


def rewrite_for_tensorrt(model: onnx.ModelProto, *, input_size: tuple[int, int] | None = None) -> tuple[onnx.ModelProto, RewriteReport]:
    """A copy of ``model`` that TensorRT 10.x parses without plugins, and what changed.

    ``input_size`` (height, width) fixes the input's spatial size, which lets
    shape-dependent control flow fold away.  Metadata props are kept.
    """
    source = onnx.ModelProto()
    source.CopyFrom(model)
    if input_size is not None:
        fix_input_size(source, input_size)
    graph = gs.import_onnx(infer_shapes(source))
    crops = replace_crop_and_resize_loops(graph)
    graph.cleanup().toposort()
    rewritten = _folded(graph)
    loops = 0
    for _ in range(_MAX_ROUNDS):
        # The batch Loop must go first: the resizer's If sits in its body, where its
        # condition (the image shape) only folds once the body is in the main graph.
        unrolled = unroll_single_trip_loops(rewritten)
        inlined = inline_constant_ifs(rewritten)
        if not unrolled and not inlined:
            break
        loops += unrolled
        drop_identities(rewritten)
        rewritten = _folded(gs.import_onnx(infer_shapes(rewritten)))
    drop_identities(rewritten)
    rewritten = infer_shapes(rewritten)
    topks = bound_dynamic_topk(rewritten)
    if topks:
        rewritten = infer_shapes(rewritten)  # the padded TopK inputs, for the split below
    split = split_large_topk(rewritten)
    if topks or split:
        rewritten = infer_shapes(_folded(gs.import_onnx(rewritten)))
    del rewritten.metadata_props[:]
    rewritten.metadata_props.extend(model.metadata_props)

    left = [n for n in rewritten.graph.node if n.op_type in CONTROL_FLOW]
    if left:
        hint = "" if input_size else "; fix the input size (--input-size) so it can fold away"
        raise ExportError(f"{left[0].op_type} node {left[0].name!r} is left after the TensorRT rewrite{hint}")
    problems = tensorrt_problems(rewritten)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(f"TensorRT cannot parse the rewritten model: {problems[0]}{more}")
    return rewritten, RewriteReport(
        ops_before=_op_counts(model),
        ops_after=_op_counts(rewritten),
        crops_replaced=crops,
        input_size=input_size,
        loops_unrolled=loops,
        ifs_inlined=_count(source.graph, "If") - _count(rewritten.graph, "If"),
        topk_bounded=topks,
        topk_split=split,
    )


def _folded(graph: gs.Graph) -> onnx.ModelProto:
    """``graph`` with its constant subgraphs folded (constant-condition Ifs flattened), as a model."""
    for subgraph in graph.subgraphs(recursive=True):
        # Subgraphs are folded as models of their own; without the IR version onnx's
        # newest would be stamped on them, which ONNX Runtime may not load yet.
        subgraph.ir_version = graph.ir_version
    graph.fold_constants(fold_shapes=True, flatten_subgraphs=True)
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    # Shapes let fold_constants fold Shape ops; data_prop follows them through Gather/Concat chains.
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _count(graph: onnx.GraphProto, op_type: str) -> int:
    """How many ``op_type`` nodes ``graph`` has, its subgraphs included."""
    total = 0
    for node in graph.node:
        total += node.op_type == op_type
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                total += _count(subgraph, op_type)
    return total


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in model.graph.node))
