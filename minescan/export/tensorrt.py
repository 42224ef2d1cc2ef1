"""The ``--target tensorrt`` rewrite: an exported detector in ONNX that TensorRT's parser takes whole.

What tf2onnx leaves that TensorRT 10.x cannot parse, and what replaces it:

* ``crop_and_resize`` as a Loop of ``Resize(tf_crop_and_resize)`` becomes one
  ``RoiAlign`` with a mask (:mod:`minescan.export.crop_and_resize`; exact
  TF semantics, so it also removes the ONNX export's edge-box mismatch);
* control flow that only depends on the input size (the OD API's per-image
  resizer: an ``If`` on the image shape inside a ``Loop`` over the batch)
  becomes static once the input size is fixed: ONNX Runtime folds every
  constant subgraph and the ``If`` with a constant condition is inlined
  (onnx-graphsurgeon's ``fold_constants``);
* NMS needs nothing: tf2onnx already emits ``NonMaxSuppression`` (and
  ``TopK``/``Gather``) for TF's NMS ops, and the outputs are padded to the
  signature's fixed K by ``Pad``, all of which TensorRT parses.

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

from minescan.export.crop_and_resize import replace_crop_and_resize_loops
from minescan.export.errors import ExportError
from minescan.export.tensorrt_ops import tensorrt_problems

CONTROL_FLOW = ("Loop", "If", "Scan")


@dataclass(frozen=True)
class RewriteReport:
    """What :func:`rewrite_for_tensorrt` changed."""

    ops_before: Mapping[str, int]  # op type -> count, top-level nodes
    ops_after: Mapping[str, int]
    crops_replaced: int
    input_size: tuple[int, int] | None  # fixed (height, width), None when left as exported

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
                f"Loop(s) -> RoiAlign, no Loop/If left, every op in TensorRT 10's ONNX operator matrix",
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
    graph = gs.import_onnx(_infer_shapes(source))
    crops = replace_crop_and_resize_loops(graph)
    graph.cleanup().toposort()
    graph.fold_constants(fold_shapes=True, flatten_subgraphs=True)
    graph.cleanup().toposort()
    rewritten = _infer_shapes(gs.export_onnx(graph))
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
    )


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    # Shapes let fold_constants fold Shape ops; data_prop follows them through Gather/Concat chains.
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in model.graph.node))
