"""Free the batch dimension of a one-image detector by looping its graph over the batch.

Why: a TF Object Detection API graph processes only image 0 of its input
(its preprocessing and postprocessing index the batch with 0), so
``minescan export`` fixes its batch at 1 (:func:`minescan.export.convert._with_batch_dim`)
and minescan's engine splits larger batches itself.  A server that batches
for the client cannot do that: Triton's dynamic batching stacks requests
along dimension 0 and needs the model to take and return a variable-size
batch (its backends refuse ``max_batch_size > 0`` unless the first dimension
of every input and output is variable).

What :func:`free_batch` makes: the same detector with input ``input_tensor``
[batch, H, W, 3] whose graph is a single ONNX ``Loop`` over the batch
(trip count = ``Shape(input_tensor)[0]``).  The body gathers image ``i`` as
[1, H, W, 3], runs the original nodes unchanged on it, squeezes each
contract output's leading 1 and emits it as a scan output, which the Loop
stacks along axis 0: ``detection_boxes`` [batch, K, 4],
``detection_scores``/``detection_classes`` [batch, K], ``num_detections``
[batch], in their original element types.  Invariants:

* the original graph sees exactly the [1, H, W, 3] input it was built for,
  so each image's outputs are the ones a batch-1 call gives (checked by
  :func:`verify_free_batch`: boxes and scores within 1e-5, classes and
  counts exact), and every image's K must be the same (OD API outputs are
  padded to K);
* the initializers move into the Loop body, their only consumer (one copy
  of the weights; one that is also a graph input, a default-valued input of
  old IR versions, stays outer).  Read as outer-scope values they would
  work too, but ONNX Runtime's layout optimizer (NCHWc, on by default)
  converts only Convs whose weights are constants of the graph they run in:
  on the tiny fixture the outer-scope variant ran other Conv kernels, its
  scores moved by up to 1.2e-4 and near-tied boxes swapped places, which
  :func:`verify_free_batch` rightly refuses;
* inside the body the values named ``input_tensor`` and the four output
  names are renamed (they are outer names now), in nested subgraphs too
  (TF exports hold Loop/If nodes); values a nested subgraph defines itself
  are left alone;
* the model's opset imports, IR version, functions and ``metadata_props``
  (minescan's labels, recipe...) are kept.

Cost: the images of a batch still run one after the other, in one
``session.run``; the loop adds ONNX Runtime's per-iteration subgraph
execution, which is small next to a detector.  Measured with ONNX Runtime
1.32 CPU sessions (default optimizations, one intra- and one inter-op
thread) on the tiny fixture Faster
R-CNN (``testkit.fixture_model``, backbone "tiny", exported by
:func:`minescan.export.convert.export_onnx`), 4 synthetic 128 x 128 tiles,
median of 60 runs, on an AMD EPYC (/proc/cpuinfo: "AMD EPYC", family 25
model 17, AVX-512; 2 cores shared with other work, so +-10 % noise):
original at batch 1 10.7 ms per tile, freed at batch 4 10.3 ms per tile
(a second series: 12.9 and 12.7; at 320 x 320: 12.7 and 13.1).  The freed
model costs nothing measurable and buys nothing on its own: it lets Triton
queue requests and run batches of any size.  The outer-scope-weights
variant ran 11.1 ms (128 px) and 15.6 ms (320 px) per tile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from minescan.export.errors import ExportError
from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES
from minescan.export.graph_walk import subgraphs as _subgraphs

BATCH_DIM = "batch"
BOX_SCORE_TOLERANCE = 1e-5
"""Largest absolute difference allowed between the freed model's boxes/scores and the original's."""
_EXACT = ("detection_classes", "num_detections")
_PROBE_SIZE = (128, 128)  # tile size for the check when the graph and metadata leave it open


@dataclass(frozen=True)
class FreeBatchCheck:
    """What :func:`verify_free_batch` compared: tiles, largest differences, and the time each way."""

    tiles: int
    max_box_diff: float
    max_score_diff: float
    single_ms_per_tile: float  # original model, one tile per call
    batched_ms_per_tile: float  # freed model, all tiles in one call

    def format(self) -> str:
        return (
            f"freed batch agrees with batch-1 calls on {self.tiles} tiles (max box diff {self.max_box_diff:.1e}, "
            f"max score diff {self.max_score_diff:.1e}; classes and counts equal); "
            f"{self.single_ms_per_tile:.1f} ms/tile one by one, {self.batched_ms_per_tile:.1f} ms/tile batched"
        )


def free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a symbolic batch, its original graph run once per image in a ``Loop``.

    ``model`` must have the contract's input and four outputs, each with a
    leading batch dimension of 1 (or a symbolic one) when run on one image.
    Raises :class:`ExportError` (one line) when it is not such a model or the
    result fails ``onnx.checker.check_model``.
    """
    graph = model.graph
    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    missing = [f"input {INPUT_NAME!r}"] if INPUT_NAME not in inputs else []
    missing += [f"output {n!r}" for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise ExportError(f"cannot free the batch: the model has no {missing[0]} (the detector contract's input and outputs are needed)")
    extra = sorted(set(outputs) - set(OUTPUT_NAMES))
    if extra:
        raise ExportError(f"cannot free the batch: outputs outside the contract ({', '.join(extra)}); export with minescan export")
    image = inputs[INPUT_NAME]
    rank = len(image.type.tensor_type.shape.dim)
    if image.type.tensor_type.HasField("shape") and rank != 4:
        raise ExportError(f"cannot free the batch: {INPUT_NAME!r} has rank {rank}, expected [batch, H, W, 3]")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < 11:
        raise ExportError(f"cannot free the batch: opset {opset} is below 11 (Loop scan outputs need 11+); re-export at a newer opset")

    taken = _all_names(graph)
    fresh = _NameMaker(taken)
    rename = {name: fresh(f"per_image/{name}") for name in (INPUT_NAME, *OUTPUT_NAMES)}

    # The body: the original nodes, renamed, between a gather of image i and squeezes of its outputs.
    iteration, cond_in, cond_out = fresh("per_image/i"), fresh("per_image/cond_in"), fresh("per_image/cond_out")
    index = fresh("per_image/index")
    zero_axis = fresh("per_image/axis0")
    squeeze_axes = opset >= 13
    body_nodes = [
        _axes_node("Unsqueeze", iteration, index, zero_axis, squeeze_axes, fresh),
        helper.make_node("Gather", [INPUT_NAME, index], [rename[INPUT_NAME]], axis=0, name=fresh("per_image/gather")),
    ]
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_node(copy, rename)
        body_nodes.append(copy)
    scan_infos = []
    for name in OUTPUT_NAMES:
        per_image = fresh(f"per_image/{name}_squeezed")
        body_nodes.append(_axes_node("Squeeze", rename[name], per_image, zero_axis, squeeze_axes, fresh))
        elem_type = outputs[name].type.tensor_type.elem_type
        dims = _dims(outputs[name])
        scan_infos.append(helper.make_tensor_value_info(per_image, elem_type, None if dims is None else list(dims[1:])))
    body_nodes.append(helper.make_node("Identity", [cond_in], [cond_out], name=fresh("per_image/cond")))
    value_info = []
    for info in list(graph.value_info) + [outputs[n] for n in OUTPUT_NAMES]:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        copy.name = rename.get(copy.name, copy.name)
        value_info.append(copy)
    graph_inputs = {v.name for v in graph.input}
    outer_initializers, body_initializers = [], [onnx.numpy_helper.from_array(np.array([0], np.int64), zero_axis)]
    for tensor in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename.get(copy.name, copy.name)
        (outer_initializers if tensor.name in graph_inputs else body_initializers).append(copy)
    body = helper.make_graph(
        body_nodes,
        fresh("per_image_body"),
        [
            helper.make_tensor_value_info(iteration, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []), *scan_infos],
        body_initializers,
        value_info=value_info,
    )
    body.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name not in graph_inputs)

    # The outer graph: trip count = the batch, then the Loop.
    shape, trip = fresh("batch/shape"), fresh("batch/size")
    first = fresh("batch/first_index")
    outer_nodes = [
        helper.make_node("Shape", [INPUT_NAME], [shape], name=fresh("batch/shape_node")),
        helper.make_node("Gather", [shape, first], [trip], axis=0, name=fresh("batch/size_node")),
        helper.make_node("Loop", [trip, ""], list(OUTPUT_NAMES), body=body, name=fresh("batch/loop")),
    ]
    initializers = [*outer_initializers, onnx.numpy_helper.from_array(np.array(0, np.int64), first)]
    new_inputs = []
    for value in graph.input:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(value)
        if copy.name == INPUT_NAME and copy.type.tensor_type.HasField("shape"):
            _set_batch(copy)
        new_inputs.append(copy)
    new_outputs = []
    for name in OUTPUT_NAMES:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(outputs[name])
        if copy.type.tensor_type.HasField("shape") and copy.type.tensor_type.shape.dim:
            _set_batch(copy)
        new_outputs.append(copy)
    outer = helper.make_graph(outer_nodes, graph.name or "detector", new_inputs, new_outputs, initializers)
    outer.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in graph_inputs)
    outer.doc_string = graph.doc_string

    freed = onnx.ModelProto()
    freed.CopyFrom(model)
    freed.graph.CopyFrom(outer)
    try:
        onnx.checker.check_model(freed)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the batch-freed model fails onnx.checker: {_first_line(exc)}") from exc
    return freed


def verify_free_batch(
    original: bytes | str | Path | onnx.ModelProto,
    freed: bytes | str | Path | onnx.ModelProto,
    tiles: np.ndarray,
) -> FreeBatchCheck:
    """Run ``original`` one tile per call and ``freed`` on all ``tiles`` at once (ONNX Runtime CPU); compare.

    Every contract output must agree: boxes and scores within
    :data:`BOX_SCORE_TOLERANCE`, classes and counts exactly, shapes equal.
    Raises :class:`ExportError` (one line naming the first disagreement) or
    returns what was compared.
    """
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[3] != 3 or len(tiles) == 0:
        raise ExportError(f"tiles must be uint8 [N>0, H, W, 3], got {tiles.dtype} {list(tiles.shape)}")
    single_session, batched_session = _session(original, "the original model"), _session(freed, "the batch-freed model")
    _run(single_session, tiles[:1], "the original model")  # warm-up: the first run of a session allocates
    _run(batched_session, tiles[:1], "the batch-freed model")
    started = time.perf_counter()
    singles = [_run(single_session, tile[np.newaxis], "the original model") for tile in tiles]
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = _run(batched_session, tiles, "the batch-freed model")
    batched_s = time.perf_counter() - started
    diffs = {}
    for name in OUTPUT_NAMES:
        try:
            expected = np.concatenate([s[name] for s in singles])
        except ValueError as exc:  # the single calls gave different K: cannot be stacked, nor looped
            raise ExportError(f"the original model's {name!r} changes shape from tile to tile ({exc}); its batch cannot be freed") from exc
        got = batched[name]
        if got.shape != expected.shape:
            raise ExportError(
                f"batch-freed model: {name!r} has shape {list(got.shape)} for {len(tiles)} tiles, "
                f"the batch-1 calls give {list(expected.shape)}"
            )
        if name in _EXACT:
            wrong = np.flatnonzero((got != expected).reshape(len(tiles), -1).any(axis=1))
            if wrong.size:
                raise ExportError(f"batch-freed model: {name!r} of tile {int(wrong[0])} differs from a batch-1 call")
        else:
            diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
            if not diff <= BOX_SCORE_TOLERANCE:  # also catches NaN
                raise ExportError(
                    f"batch-freed model: {name!r} differs from batch-1 calls by up to {diff:.2e} (tolerance {BOX_SCORE_TOLERANCE:g})"
                )
            diffs[name] = diff
    return FreeBatchCheck(
        tiles=len(tiles),
        max_box_diff=diffs["detection_boxes"],
        max_score_diff=diffs["detection_scores"],
        single_ms_per_tile=1000 * single_s / len(tiles),
        batched_ms_per_tile=1000 * batched_s / len(tiles),
    )


def check_tiles(model: onnx.ModelProto, count: int = 4, seed: int = 0) -> np.ndarray:
    """``count`` synthetic tiles at the model's input size (graph dims, else metadata, else 128 x 128).

    Synthetic tiles (:func:`minescan.export.detections.synthetic_tiles`) hold
    bright patches over textured terrain: something for a detector to find.
    """
    from minescan.export.detections import synthetic_tiles
    from minescan.export.onnx_metadata import read_metadata

    image = next((v for v in model.graph.input if v.name == INPUT_NAME), None)
    dims = _dims(image) if image is not None else None
    if dims is not None and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:3]):
        size = (dims[1], dims[2])
    else:
        size = read_metadata(model).input_size or _PROBE_SIZE
    return synthetic_tiles(count, size, seed=seed)


# --- helpers -----------------------------------------------------------------------------------------


class _NameMaker:
    """Value and node names not used anywhere in the model (outer graph and every subgraph)."""

    def __init__(self, taken: set[str]) -> None:
        self._taken = taken

    def __call__(self, hint: str) -> str:
        name, n = hint, 1
        while name in self._taken:
            n += 1
            name = f"{hint}_{n}"
        self._taken.add(name)
        return name




def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names.update(t.name for t in graph.initializer)
    names.update(t.values.name for t in graph.sparse_initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for subgraph in _subgraphs(node):
            names.update(_all_names(subgraph))
    names.discard("")
    return names


def _rename_node(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename ``node``'s inputs and outputs, and the outer-scope references of its subgraphs."""
    for i, name in enumerate(node.input):
        node.input[i] = rename.get(name, name)
    for i, name in enumerate(node.output):
        node.output[i] = rename.get(name, name)
    for subgraph in _subgraphs(node):
        _rename_outer_references(subgraph, rename)


def _rename_outer_references(graph: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    """Rename the values ``graph`` reads from enclosing scopes; a name it defines itself shadows the mapping."""
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    local |= {t.values.name for t in graph.sparse_initializer}
    visible = {k: v for k, v in rename.items() if k not in local}
    if not visible:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = visible.get(name, name)
        for subgraph in _subgraphs(node):
            _rename_outer_references(subgraph, visible)
    for output in graph.output:  # a subgraph may output an outer value directly
        output.name = visible.get(output.name, output.name)


def _axes_node(op: str, data: str, out: str, axes: str, axes_as_input: bool, fresh: _NameMaker) -> onnx.NodeProto:
    """Unsqueeze/Squeeze on axis 0: ``axes`` an input from opset 13, an attribute before."""
    if axes_as_input:
        return helper.make_node(op, [data, axes], [out], name=fresh(f"{out}_node"))
    return helper.make_node(op, [data], [out], axes=[0], name=fresh(f"{out}_node"))


def _set_batch(value: onnx.ValueInfoProto) -> None:
    dim = value.type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = BATCH_DIM


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _session(model: bytes | str | Path | onnx.ModelProto, what: str):
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        if not Path(model).is_file():
            raise ExportError(f"{model}: no such ONNX file")
        model = str(model)
    try:
        return ort.InferenceSession(bytes(model) if isinstance(model, bytearray) else model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph types
        raise ExportError(f"ONNX Runtime cannot load {what}: {_first_line(exc)}") from exc


def _run(session, tiles: np.ndarray, what: str) -> dict[str, np.ndarray]:
    try:
        values = session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles})
    except Exception as exc:  # ONNX Runtime's errors carry the failing node
        raise ExportError(f"ONNX Runtime fails on {what} with a batch of {len(tiles)}: {_first_line(exc)}") from exc
    return dict(zip(OUTPUT_NAMES, values))
