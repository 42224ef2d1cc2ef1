"""``TopK`` rewritten for TensorRT's parser: a data-dependent ``K`` made constant, a ``K`` of 3840 or more split.

TensorRT's parser takes a TopK only with ``K`` an initializer below 3840.
A computed ``K`` is replaced by a static bound (pad, TopK, slice back); a
constant ``K >= 3840`` by rounds of smaller TopKs, each over what the earlier
rounds left.  Both give ONNX TopK's values and indices exactly, ties included.

The OD API sorts its NMS candidates with ``SortByField``: ``tf.nn.top_k(scores,
k=tf.shape(scores)[0])``, a full sort of a vector whose length is decided at
run time (boxes kept by NMS, then by ``ClipToWindow``'s ``NonZero``).  tf2onnx
turns that into ``TopK(x, K = Shape(x)[0])``, but TensorRT's parser wants
``K`` as an initializer (and below 3840).

The length has a static upper bound (NMS keeps at most
``max_output_boxes_per_class`` per class; ``NonZero`` at most the elements of
its input), found here by following the tensor back through the ops that
cannot make a dimension larger than their inputs'; or ``K`` itself has one
(a pre-NMS top-k on an image of any size: ``K = min(6000, anchors)``), found
through the shape arithmetic.  ``B`` is the smaller bound found.  With it::

    TopK(x, K)  ==  Slice(TopK(Concat(x, fill[B]), B), 0:K)

where ``fill`` is the value that sorts last (-inf for ``largest``, +inf for
smallest, the integer extremes for integer inputs): the padded tensor has
``n + B >= B`` elements, ``K <= n`` and ``K <= B``, the fill entries sort after every
element of ``x`` (ties go to the lower index, i.e. to ``x``), so the first
``K`` values and indices are exactly the original ones.  ``B`` may be 3840 or
more: the padded TopK then has a large constant ``K`` and is split as below.

**A constant K of 3840 or more: repeated extraction.**  TensorRT's parser
takes no TopK with ``K >= 3840`` (a common first stage keeps its top 6000
anchors before NMS).  :func:`split_large_topk` extracts the ``K`` values in
``c = ceil(K / 3839)`` rounds of ``m_1 + ... + m_c = K`` (each ``m_i <
3840``), each round one small TopK over what the earlier rounds left::

    v_i, j_i = TopK(y_i, m_i)                   y_1 = x, p_1 = 0..n-1
    g_i      = GatherElements(p_i, j_i)         positions in x
    keep     = y_i < v_i[-1]  or  (y_i == v_i[-1]  and  p_i > g_i[-1])
    y_i+1, p_i+1 = y_i, p_i compacted to keep   (NonZero, Gather: order kept)
    TopK(x, K) == Concat(v_1..v_c), Concat(g_1..g_c)

(for ``largest=0`` read ``>`` for ``<``).  Why it is equal: ONNX's sorted
TopK lists the first ``K`` elements of ``x`` in the strict total order
"larger value first, equal values by lower index", i.e. by the key (value
descending, position ascending).  Round 1 returns the first ``m_1`` of that
order.  An element comes after all of them exactly when its key is after the
key of the last one returned, ``(v_1[-1], g_1[-1])``: that is the ``keep``
test, so ``keep`` removes exactly the returned elements.  Compaction keeps the
survivors in position order, so on ``y_2`` TopK's order (value, then index in
``y_2``) is the same total order (value, then position in ``x``, which ``p_2``
carries); round 2 thus returns elements ``m_1+1 .. m_1+m_2`` of it, and so
on by induction.  The concatenation is the first ``K`` in order: the same
values (bit for bit: each is an element of ``x``, never computed) and the same indices,
ties included.  Each row of a multi-row input loses exactly ``m_i``
elements per round, so the row-major compaction reshapes back to rows.
Precondition: no NaN in ``x`` (ONNX leaves their order unspecified; NaN
fails every comparison and would be dropped); ``sorted=0`` gets the sorted
order, which ONNX allows.  Ops: TopK (``K < 3840``), GatherElements, Slice,
Less/Greater, Equal, And, Or, NonZero, Reshape, Gather, Range, Shape, Expand,
Concat (Transpose for a non-last axis), all in TensorRT's matrix.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from minescan.export.tensorrt_ops import TOPK_MAX_K

_ELEMENTWISE = frozenset(
    "Abs Add And BitShift Cast Ceil Clip Cos Div Equal Erf Exp Floor Greater GreaterOrEqual Identity IsInf IsNaN "
    "Less LessOrEqual Log Max Min Mod Mul Neg Not Or Pow Reciprocal Relu Round Sigmoid Sign Sin Sqrt Sub Tanh "
    "Where Xor".split()
)


def bound_dynamic_topk(model: onnx.ModelProto) -> int:
    """Give each top-level ``TopK`` with a computed ``K`` a constant one (see the module doc); return how many.

    ``model`` must be shape-inferred (ranks and static dimensions are read from
    its value infos).  A TopK whose bound cannot be found is left as it is; a
    bound of 3840 or more gives a TopK with a large constant ``K``, for
    :func:`split_large_topk`.
    """
    return _replace_topks(model, _bounded_topk)


def _bounded_topk(node: onnx.NodeProto, bounds: "_Bounds", graph: onnx.GraphProto) -> list[onnx.NodeProto] | None:
    if len(node.input) < 2 or node.input[1] in bounds.constants:
        return None
    x, k = node.input[0], node.input[1]
    dims = bounds.shapes.get(x)
    if dims is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = int(attrs.get("axis", -1)) % len(dims)
    known = [b for b in (bounds.dim(x, axis), bounds.value(k)) if b is not None]
    bound = min(known) if known else None
    if bound is None or bound < 1:
        return None
    if any(not isinstance(d, int) for i, d in enumerate(dims) if i != axis):
        return None  # the fill needs the other dimensions to be static
    dtype = helper.tensor_dtype_to_np_dtype(bounds.types[x])
    largest = int(attrs.get("largest", 1))
    if np.issubdtype(dtype, np.floating):
        value = -np.inf if largest else np.inf
    elif np.issubdtype(dtype, np.integer):
        value = np.iinfo(dtype).min if largest else np.iinfo(dtype).max
    else:
        return None
    prefix = f"{node.name or node.output[0]}/bounded_k/"
    fill_shape = [bound if i == axis else d for i, d in enumerate(dims)]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.full(fill_shape, value, dtype), prefix + "fill"),
            numpy_helper.from_array(np.array([bound], np.int64), prefix + "k"),
            numpy_helper.from_array(np.array([0], np.int64), prefix + "start"),
            numpy_helper.from_array(np.array([axis], np.int64), prefix + "axis"),
        ]
    )
    topk_attrs = {"axis": axis, "largest": largest, "sorted": 1}
    nodes = [
        helper.make_node("Concat", [x, prefix + "fill"], [prefix + "padded"], name=prefix + "concat", axis=axis),
        helper.make_node("TopK", [prefix + "padded", prefix + "k"], [prefix + "values", prefix + "indices"], name=node.name, **topk_attrs),
    ]
    for result, output in zip((prefix + "values", prefix + "indices"), node.output):
        if output:
            nodes.append(helper.make_node("Slice", [result, prefix + "start", k, prefix + "axis"], [output], name=f"{prefix}{output}"))
    return nodes


def split_large_topk(model: onnx.ModelProto) -> int:
    """Replace each top-level TopK with a constant ``K >= 3840`` by rounds of smaller ones (see the module doc).

    Returns how many were replaced.  ``model`` must be shape-inferred: the
    dimensions other than the TopK axis must be static (the rounds work on
    rows of the input).  A TopK that does not qualify is left for
    :func:`~minescan.export.tensorrt_ops.tensorrt_problems` to report.
    """
    return _replace_topks(model, _split_topk)


def _replace_topks(model: onnx.ModelProto, rewrite) -> int:
    """Each top-level TopK replaced by ``rewrite(node, bounds, graph)``'s nodes (None: kept); how many were."""
    graph = model.graph
    bounds = _Bounds(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        replacement = rewrite(node, bounds, graph) if node.op_type == "TopK" else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def round_sizes(k: int, limit: int = TOPK_MAX_K) -> tuple[int, ...]:
    """``K`` cut into the fewest nearly equal parts below ``limit`` (the per-round TopK sizes)."""
    rounds = -(-k // (limit - 1))
    return tuple(k // rounds + (i < k % rounds) for i in range(rounds))


def _split_topk(node: onnx.NodeProto, bounds: "_Bounds", graph: onnx.GraphProto) -> list[onnx.NodeProto] | None:
    if len(node.input) < 2:
        return None
    k_value = bounds._const_ints(node.input[1])
    dims = bounds.shapes.get(node.input[0])
    if not k_value or k_value[0] < TOPK_MAX_K or dims is None or not dims:
        return None
    k = k_value[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    rank = len(dims)
    axis = int(attrs.get("axis", -1)) % rank
    others = [d for i, d in enumerate(dims) if i != axis and isinstance(d, int) and d >= 1]
    if len(others) != rank - 1:
        return None  # rows must be static
    largest = int(attrs.get("largest", 1))
    rows = math.prod(others)
    prefix = f"{node.name or node.output[0]}/split_k/"
    built: list[onnx.NodeProto] = []
    constants: dict[str, np.ndarray] = {}

    def const(name: str, value: np.ndarray) -> str:
        constants[prefix + name] = value
        return prefix + name

    def op(op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        built.append(helper.make_node(op_type, inputs, [prefix + output], name=prefix + output, **attributes))
        return prefix + output

    perm = [i for i in range(rank) if i != axis] + [axis]
    source = node.input[0]
    if axis != rank - 1:
        source = op("Transpose", [source], "moved", perm=perm)
    flat_shape = const("flat_shape", np.array([-1], np.int64))
    rows_shape = const("rows_shape", np.array([rows, -1], np.int64))
    values = op("Reshape", [source, rows_shape], "rows")
    length = op("Gather", [op("Shape", [values], "shape"), const("one", np.array(1, np.int64))], "length", axis=0)
    arange = op("Range", [const("zero", np.array(0, np.int64)), length, const("step", np.array(1, np.int64))], "arange")
    positions = op("Expand", [arange, op("Shape", [values], "rows_dims")], "positions")
    last_axis = const("last_axis", np.array([1], np.int64))
    round_values, round_indices = [], []
    sizes = round_sizes(k)
    for r, size in enumerate(sizes):
        tag = f"r{r}_"
        v, j = prefix + tag + "values", prefix + tag + "local"
        built.append(
            helper.make_node("TopK", [values, const(tag + "k", np.array([size], np.int64))], [v, j], name=prefix + tag + "topk",
                             axis=1, largest=largest, sorted=1)
        )
        g = op("GatherElements", [positions, j], tag + "indices", axis=1)
        round_values.append(v)
        round_indices.append(g)
        if r == len(sizes) - 1:
            break
        start, end = const(tag + "last_start", np.array([size - 1], np.int64)), const(tag + "last_end", np.array([size], np.int64))
        last_value = op("Slice", [v, start, end, last_axis], tag + "last_value")
        last_index = op("Slice", [g, start, end, last_axis], tag + "last_index")
        after = op("Less" if largest else "Greater", [values, last_value], tag + "after")
        tied = op("Equal", [values, last_value], tag + "tied")
        later = op("Greater", [positions, last_index], tag + "later")
        keep = op("Or", [after, op("And", [tied, later], tag + "tied_later")], tag + "keep")
        # Survivors in row-major order; every row keeps the same count, so they reshape back to rows.
        nonzero = op("NonZero", [op("Reshape", [keep, flat_shape], tag + "keep_flat")], tag + "nonzero")
        kept = op("Reshape", [nonzero, flat_shape], tag + "kept")
        values_kept = op("Gather", [op("Reshape", [values, flat_shape], tag + "values_flat"), kept], tag + "values_kept", axis=0)
        positions_kept = op("Gather", [op("Reshape", [positions, flat_shape], tag + "positions_flat"), kept], tag + "positions_kept", axis=0)
        values = op("Reshape", [values_kept, rows_shape], tag + "rest")
        positions = op("Reshape", [positions_kept, rows_shape], tag + "rest_positions")
    outputs = [op("Concat", round_values, "values", axis=1), op("Concat", round_indices, "indices", axis=1)]
    result_shape = const("result_shape", np.array([dims[i] for i in perm[:-1]] + [k], np.int64))
    for result, output in zip(outputs, node.output):
        if not output:
            continue
        name = result.removeprefix(prefix)
        if axis == rank - 1:
            built.append(helper.make_node("Reshape", [result, result_shape], [output], name=f"{prefix}{name}_out"))
        else:
            moved = op("Reshape", [result, result_shape], name + "_moved")
            inverse = [perm.index(i) for i in range(rank)]
            built.append(helper.make_node("Transpose", [moved], [output], name=f"{prefix}{name}_out", perm=inverse))
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    return built


class _Bounds:
    """Static upper bounds of tensor dimensions, followed back through dimension-preserving ops."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.shapes: dict[str, list[int | None]] = {}
        self.types: dict[str, int] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor_type = value.type.tensor_type
            self.types[value.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                self.shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        self.constants: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for init in graph.initializer:
            self.shapes[init.name] = list(init.dims)
            self.types[init.name] = init.data_type
        self.producers: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            for output in node.output:
                self.producers[output] = node
        self._memo: dict[tuple[str, int], int | None] = {}

    def rank(self, name: str) -> int | None:
        dims = self.shapes.get(name)
        return None if dims is None else len(dims)

    def dim(self, name: str, axis: int, depth: int = 0) -> int | None:
        dims = self.shapes.get(name)
        if dims is not None and 0 <= axis < len(dims) and isinstance(dims[axis], int):
            return dims[axis]
        key = (name, axis)
        if key not in self._memo:
            self._memo[key] = None  # guards against cycles
            node = self.producers.get(name)
            self._memo[key] = None if node is None or depth > 400 else self._through(node, name, axis, depth + 1)
        return self._memo[key]

    def value(self, name: str, depth: int = 0) -> int | None:
        """An upper bound of every element of the integer tensor ``name`` (sizes and counts), or None."""
        constant = self._const_ints(name)
        if constant is not None:
            return max(constant) if constant else None
        node = self.producers.get(name)
        if node is None or depth > 400:
            return None
        op = node.op_type
        if op in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Slice", "Expand", "Tile"):
            return self.value(node.input[0], depth + 1)
        if op in ("Concat", "Max"):
            values = [self.value(source, depth + 1) for source in node.input]
            return None if None in values else max(values)
        if op == "Min":
            values = [v for v in (self.value(source, depth + 1) for source in node.input) if v is not None]
            return min(values) if values else None
        if op == "Gather":
            shape = self.producers.get(node.input[0])
            index = self._const_ints(node.input[1])
            if shape is not None and shape.op_type == "Shape" and index is not None and len(index) == 1:
                rank = self.rank(shape.input[0])
                start = {a.name: helper.get_attribute_value(a) for a in shape.attribute}.get("start", 0)
                return None if rank is None else self.dim(shape.input[0], (start + index[0]) % rank, depth + 1)
            return self.value(node.input[0], depth + 1)
        if op in ("Add", "Sub", "Mul"):
            a, b = self.value(node.input[0], depth + 1), None
            if op == "Sub":
                b = self.lower(node.input[1], depth + 1)
                return None if a is None or b is None else a - b
            b = self.value(node.input[1], depth + 1)
            if a is None or b is None:
                return None
            if op == "Add":
                return a + b
            low_a, low_b = self.lower(node.input[0], depth + 1), self.lower(node.input[1], depth + 1)
            return a * b if low_a is not None and low_b is not None and low_a >= 0 and low_b >= 0 else None
        if op == "Shape":
            rank = self.rank(node.input[0])
            dims = [self.dim(node.input[0], i, depth + 1) for i in range(rank or 0)]
            return None if not dims or None in dims else max(dims)
        if op == "Size":
            rank = self.rank(node.input[0])
            dims = [self.dim(node.input[0], i, depth + 1) for i in range(rank or 0)]
            return None if rank is None or None in dims else math.prod(dims)
        return None

    def lower(self, name: str, depth: int = 0) -> int | None:
        """A lower bound of every element of the integer tensor ``name``, or None (sizes are >= 0)."""
        constant = self._const_ints(name)
        if constant is not None:
            return min(constant) if constant else None
        node = self.producers.get(name)
        if node is None or depth > 400:
            return None
        op = node.op_type
        if op in ("Shape", "Size", "NonZero", "NonMaxSuppression"):
            return 0
        if op in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Slice", "Expand", "Tile", "Gather"):
            return self.lower(node.input[0], depth + 1)
        if op in ("Concat", "Min"):
            values = [self.lower(source, depth + 1) for source in node.input]
            return None if None in values else min(values)
        if op == "Max":
            values = [v for v in (self.lower(source, depth + 1) for source in node.input) if v is not None]
            return max(values) if values else None
        return None

    def _const_ints(self, name: str) -> list[int] | None:
        value = self.constants.get(name)
        return None if value is None else [int(v) for v in value.reshape(-1)]

    def _through(self, node: onnx.NodeProto, name: str, axis: int, depth: int) -> int | None:  # noqa: C901 (one case per op)
        op = node.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rank = self.rank(name)
        if op in _ELEMENTWISE:
            if rank is None:
                return None
            bounds = []
            for source in node.input:
                source_rank = self.rank(source) if source else None
                if source_rank is None:
                    return None
                source_axis = axis - (rank - source_rank)
                if source_axis < 0:
                    continue
                bound = self.dim(source, source_axis, depth)
                if bound is None:
                    return None
                bounds.append(bound)
            return max(bounds) if bounds else None
        if op in ("Slice", "Split", "Dropout"):
            return self.dim(node.input[0], axis, depth)
        if op == "NonZero":
            source_rank = self.rank(node.input[0])
            if source_rank is None:
                return None
            if axis == 0:
                return source_rank
            dims = [self.dim(node.input[0], i, depth) for i in range(source_rank)]
            return None if None in dims else math.prod(dims)
        if op == "NonMaxSuppression":
            if axis == 1:
                return 3
            batch, classes, boxes = (self.dim(node.input[1], i, depth) for i in range(3))
            limit = self.value(node.input[2], depth) if len(node.input) > 2 and node.input[2] else 0
            known = [b for b in (boxes, limit) if b is not None]
            if batch is None or classes is None or not known:
                return None
            return batch * classes * max(min(known), 0)
        if op == "Expand":
            source_rank = self.rank(node.input[0])
            target = self.value(node.input[1], depth)
            if rank is None or source_rank is None or target is None:
                return None
            source_axis = axis - (rank - source_rank)
            source = self.dim(node.input[0], source_axis, depth) if source_axis >= 0 else 1
            return None if source is None else max(source, target)
        if op == "Gather":
            data_rank, index_rank = self.rank(node.input[0]), self.rank(node.input[1])
            if data_rank is None or index_rank is None:
                return None
            gather_axis = int(attrs.get("axis", 0)) % data_rank
            if axis < gather_axis:
                return self.dim(node.input[0], axis, depth)
            if axis < gather_axis + index_rank:
                return self.dim(node.input[1], axis - gather_axis, depth)
            return self.dim(node.input[0], axis - index_rank + 1, depth)
        if op == "Transpose":
            if rank is None:
                return None
            perm = attrs.get("perm") or list(reversed(range(rank)))
            return self.dim(node.input[0], int(perm[axis]), depth)
        if op in ("Squeeze", "Unsqueeze"):
            axes = attrs.get("axes") or (self._const_ints(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
            source_rank = self.rank(node.input[0])
            if axes is None or rank is None or source_rank is None:
                return None
            if op == "Squeeze":
                removed = {a % source_rank for a in axes}
                kept = [a for a in range(source_rank) if a not in removed]
                return self.dim(node.input[0], kept[axis], depth) if axis < len(kept) else None
            added = {a % rank for a in axes}
            if axis in added:
                return 1
            return self.dim(node.input[0], axis - sum(a < axis for a in added), depth)
        if op == "Concat":
            if rank is None:
                return None
            bounds = [self.dim(source, axis, depth) for source in node.input]
            if axis == int(attrs["axis"]) % rank:
                return None if None in bounds else sum(bounds)
            known = [b for b in bounds if b is not None]
            return min(known) if known else None
        if op == "Reshape":
            target = self._const_ints(node.input[1])
            source_rank = self.rank(node.input[0])
            if target is None or source_rank is None or axis >= len(target):
                return None
            if target[axis] > 0:
                return target[axis]
            if target[axis] == 0 and not attrs.get("allowzero", 0):
                return self.dim(node.input[0], axis, depth)
            others = [t for i, t in enumerate(target) if i != axis]
            if target[axis] != -1 or any(t <= 0 for t in others):
                return None  # a 0 ("copy") elsewhere would need a lower bound of that dimension
            numel = [self.dim(node.input[0], i, depth) for i in range(source_rank)]
            return None if None in numel else math.prod(numel) // math.prod(others)
        if op == "Range":
            start, delta = self._const_ints(node.input[0]), self._const_ints(node.input[2])
            limit = self.value(node.input[1], depth)
            if not start or not delta or delta[0] <= 0 or limit is None:
                return None
            return max(0, -(-(limit - start[0]) // delta[0]))
        if op == "TopK":
            source_rank = self.rank(node.input[0])
            if source_rank is not None and axis == int(attrs.get("axis", -1)) % source_rank:
                k = self._const_ints(node.input[1])
                if k:
                    return k[0]
            return self.dim(node.input[0], axis, depth)
        return None


def constant_ks(model: onnx.ModelProto) -> Mapping[str, int]:
    """The constant ``K`` of each top-level TopK that has one, by node name (for reports and tests)."""
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {n.name: int(constants[n.input[1]].reshape(-1)[0]) for n in model.graph.node if n.op_type == "TopK" and n.input[1] in constants}
