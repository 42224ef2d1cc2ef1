"""SavedModel → ONNX in minescan's detector contract, with metadata.

:func:`export_onnx` turns a TF Object Detection API SavedModel into an ONNX
file that ``minescan scan`` runs without further flags:

1. load ``serving_default`` and check it against the contract
   (:mod:`minescan.export.saved_model`);
2. wrap it in a ``tf.function`` that returns only the four contract outputs,
   so when tf2onnx freezes and optimizes the graph (grappler pruning, constant
   folding) everything only the extra outputs need disappears with them;
3. convert with tf2onnx at the requested opset;
4. make the batch dimension symbolic if ONNX Runtime then really runs a batch
   of 2 like two batches of 1; OD API graphs fix the batch at 1 internally
   (they take image 0 and return [1, ...]), so they usually stay at batch 1
   and the engine splits batches for them;
5. run ONNX shape inference, write the ``minescan.*`` metadata (labels,
   input size, preprocessing recipe, source digest, tool versions) and write
   the file atomically (:mod:`minescan.results.atomic`: a synced temporary
   file in the same directory, then a rename), so a failed export never
   leaves a truncated model behind; a write the OS refuses raises its
   :class:`~minescan.results.atomic.AtomicWriteError` ("cannot write <path>: ...").

TensorFlow and tf2onnx are imported only when an export runs (the ``export``
extra); the rest of minescan works without them.
"""

from __future__ import annotations

import dataclasses

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import onnx
import onnxruntime

import minescan
from minescan.export.onnx_metadata import read_metadata, write_metadata
from minescan.defaults import DEFAULTS
from minescan.model.metadata import ModelMetadata, Postprocessing, Recipe
from minescan.model.statistics import InputStatistics
from minescan.export._tensorflow import import_optional
from minescan.model.contract import (
    INPUT_NAME, OUTPUT_NAMES, ContractError, TensorSpec, check_classifier, contract_problems, model_task,
)
from minescan.export.detections import open_session, run_onnx, synthetic_tiles
from minescan.results.atomic import write_atomically
from minescan.export.errors import ExportError
from minescan.export.label_map import LABEL_MAP_NAME, find_label_map, read_label_map
from minescan.export.saved_model import saved_model_graph, ServingSignature, load_serving_signature, saved_model_sha256
from minescan.export.verify import compare_detections

from minescan.export.choices import DEFAULT_OPSET  # noqa: E402
DEFAULT_PREPROCESSING: Mapping[str, Any] = {
    "bands": None, "gain": DEFAULTS.gain, "offset": DEFAULTS.offset, "scale": DEFAULTS.scale, "normalisation": None,
}
BATCH_DIM = "batch"
_PROBE_SIZE = (128, 128)  # probe tile size when the model takes any size
_PROTOBUF_LIMIT = 2**31 - 1  # a single ONNX protobuf cannot exceed 2 GiB


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how."""

    onnx_path: Path
    opset: int
    dynamic_batch: bool
    batch_note: str  # why the batch stayed fixed at 1 ("" when dynamic)
    dropped_outputs: tuple[str, ...]
    nodes: int
    size_bytes: int
    seconds: float
    metadata: ModelMetadata

    def format(self) -> str:
        """A few readable lines."""
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.labels.items()))
        size = "any" if self.metadata.input_size is None else "x".join(map(str, self.metadata.input_size))
        batch = "dynamic" if self.dynamic_batch else f"fixed at 1 ({self.batch_note})"
        return "\n".join(
            [
                f"wrote {self.onnx_path} ({self.size_bytes / 1e6:.1f} MB, {self.nodes} nodes, opset {self.opset}) "
                f"in {self.seconds:.1f} s",
                f"batch {batch}; input size {size}",
                f"labels {labels}; dropped outputs: {', '.join(self.dropped_outputs) or 'none'}",
            ]
            + ([f"scans drop parts: boxes >= {self.metadata.postprocessing.drop_parts:g} inside a larger box of another class"]
               if self.metadata.postprocessing.drop_parts else [])
        )


def export_onnx(
    saved_model_dir: str | Path,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    labels: Mapping[int, str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    postprocessing: Mapping[str, float] | None = None,
    input_statistics: InputStatistics | None = None,
) -> ExportReport:
    """Convert the SavedModel in ``saved_model_dir`` to an ONNX detector at ``out_path``.

    ``labels`` maps 1-based class ids to names; without it they come from the
    ``label_map.pbtxt`` in ``saved_model_dir`` or up to two directories above.
    ``preprocessing`` overrides keys of :data:`DEFAULT_PREPROCESSING`;
    ``postprocessing`` holds the scan defaults to record (``drop_parts``);
    ``input_statistics`` the training or calibration input, for the domain-shift guard.
    """
    started = time.perf_counter()
    recipe = recipe_of(preprocessing)
    after = _postprocessing(postprocessing)
    saved_model_graph(saved_model_dir)  # a missing or non-SavedModel directory is the first thing to report
    class_names = _labels(saved_model_dir, labels)
    signature = load_serving_signature(saved_model_dir)
    model = _convert(signature, saved_model_dir, opset)
    drop_unused_inputs(model)
    _complete_loop_signatures(model.graph)
    _adopt_static_output_shapes(model, signature)
    _check_onnx_contract(model)
    model, batch_note = _with_batch_dim(model)
    input_dims = _dims(model.graph.input[0])
    height, width = input_dims[1], input_dims[2]
    metadata = ModelMetadata(
        labels=class_names,
        input_size=(height, width) if isinstance(height, int) and isinstance(width, int) else None,
        recipe=Recipe.from_json(recipe),
        source_sha256=saved_model_sha256(saved_model_dir),
        tool_versions=tool_versions(),
        postprocessing=Postprocessing.from_json(after),
        input_statistics=input_statistics,
        task="detector",
    )
    write_metadata(model, metadata)
    out_path = Path(out_path)
    size = write_model_atomically(model, out_path)
    return ExportReport(
        onnx_path=out_path,
        opset=opset,
        dynamic_batch=not batch_note,
        batch_note=batch_note,
        dropped_outputs=tuple(sorted(set(signature.function.structured_outputs) - set(OUTPUT_NAMES))),
        nodes=len(model.graph.node),
        size_bytes=size,
        seconds=time.perf_counter() - started,
        metadata=metadata,
    )


def annotate_onnx(
    source: str | Path,
    out_path: str | Path,
    *,
    labels: Mapping[int, str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    postprocessing: Mapping[str, float] | None = None,
    input_statistics: InputStatistics | None = None,
    window: int | None = None,
) -> ModelMetadata:
    """Write ``source`` (an ONNX detector or tile classifier from anywhere) to ``out_path`` with minescan's metadata completed.

    The graph is not touched.  What the model already records is kept unless
    given here: ``preprocessing`` keys override the recorded recipe's, labels
    and ``drop_parts`` replace the recorded ones, ``input_statistics`` is added.
    The task (``detector`` or ``classifier``, told by the graph's outputs) is
    recorded.  A classifier must end up with one label per output (one, the
    positive class, for a single sigmoid output) and records its window size:
    the graph's, else ``window``.  Returns the metadata written.
    """
    source, out_path = Path(source), Path(out_path)
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ExportError(f"{source}: not a readable ONNX model ({type(exc).__name__})") from exc
    inputs, outputs = [value_spec(v) for v in model.graph.input], [value_spec(v) for v in model.graph.output]
    problems = contract_problems(str(source), inputs, outputs)
    task = "detector"
    if problems:
        try:
            task = model_task(str(source), inputs, outputs)
        except ContractError:
            task = "detector"  # neither: report it against the detector contract, as always
        if task != "classifier":
            raise ExportError("; ".join(problems))
    meta = read_metadata(model)
    recipe = recipe_of({**meta.recipe.to_json(), **{k: v for k, v in (preprocessing or {}).items() if v is not None}})
    after = _postprocessing(postprocessing) if postprocessing else meta.postprocessing.to_json()
    class_names = dict(labels) if labels else dict(meta.labels)
    input_size = meta.input_size
    if task == "classifier":
        from minescan.export.keras_classifier import classifier_labels

        if postprocessing:
            raise ExportError(f"{source} is a tile classifier: drop_parts is for detectors")
        signature = check_classifier(str(source), inputs, outputs)
        classes = signature.classes or len(class_names) or 1
        class_names = classifier_labels(class_names or None, classes, source)
        height, width = signature.height, signature.width
        if height is not None and width is not None:
            if window is not None and (height, width) != (window, window):
                raise ExportError(f"{source}: the model takes {height}x{width} px windows, not --window {window}")
            input_size = (height, width)
        elif window is not None:
            input_size = (window, window)
    elif window is not None:
        raise ExportError(f"{source} is a detector: --window is for tile classifiers")
    updated = dataclasses.replace(
        meta, labels=class_names, recipe=Recipe.from_json(recipe), input_size=input_size,
        postprocessing=Postprocessing.from_json(after),
        input_statistics=input_statistics if input_statistics is not None else meta.input_statistics,
        task=task,
    )
    write_metadata(model, updated)
    write_model_atomically(model, out_path)
    return updated


def recipe_of(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    recipe = {**DEFAULT_PREPROCESSING, **(overrides or {})}
    unknown = sorted(set(recipe) - set(DEFAULT_PREPROCESSING))
    if unknown:
        raise ExportError(f"unknown preprocessing key {unknown[0]!r}; expected {', '.join(DEFAULT_PREPROCESSING)}")
    for key in ("gain", "offset", "scale"):
        if not isinstance(recipe[key], (int, float)) or isinstance(recipe[key], bool):
            raise ExportError(f"preprocessing {key!r} must be a number, got {recipe[key]!r}")
    bands = recipe["bands"]
    if bands is not None and not (isinstance(bands, (list, tuple)) and all(isinstance(b, int) and b >= 1 for b in bands)):
        raise ExportError(f"preprocessing 'bands' must be null or a list of 1-based band numbers, got {bands!r}")
    return {**recipe, "bands": None if bands is None else list(bands)}


def _postprocessing(settings: Mapping[str, float] | None) -> dict[str, float]:
    from minescan.scan.parts import PartsError, check_fraction

    unknown = sorted(set(settings or {}) - {"drop_parts"})
    if unknown:
        raise ExportError(f"unknown postprocessing key {unknown[0]!r}; expected drop_parts")
    try:
        return {k: check_fraction(float(v)) for k, v in (settings or {}).items() if v}
    except PartsError as exc:
        raise ExportError(f"drop_parts: {exc}") from exc


def _labels(saved_model_dir: str | Path, labels: Mapping[int, str] | None) -> dict[int, str]:
    if labels is None:
        found = find_label_map(saved_model_dir)
        if found is None:
            raise ExportError(f"no {LABEL_MAP_NAME} in {saved_model_dir} or the two directories above it; pass labels")
        return read_label_map(found)
    for class_id, name in labels.items():
        if not isinstance(class_id, int) or class_id < 1 or not isinstance(name, str) or not name:
            raise ExportError(f"labels must map class ids >= 1 to names, got {class_id!r}: {name!r}")
    return dict(labels)


def _convert(signature: ServingSignature, saved_model_dir: str | Path, opset: int) -> onnx.ModelProto:
    tf = import_optional("tensorflow")
    tf2onnx = import_optional("tf2onnx")

    # autograph=False: the wrapper is plain graph code, and AutoGraph would warn about it.
    @tf.function(input_signature=[signature.input_spec], autograph=False)
    def contract_outputs(input_tensor: Any) -> dict[str, Any]:
        outputs = signature.function(**{INPUT_NAME: input_tensor})
        return {name: outputs[name] for name in OUTPUT_NAMES}

    try:
        model, _ = tf2onnx.convert.from_function(contract_outputs, input_signature=[signature.input_spec], opset=opset)
    except Exception as exc:  # tf2onnx raises bare ValueError/RuntimeError/KeyError on graphs it cannot handle
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"tf2onnx cannot convert {saved_model_dir} at opset {opset}: {first_line}") from exc
    # tf2onnx lists outputs alphabetically; the contract's order reads better in tools.
    ordered = sorted(model.graph.output, key=lambda output: OUTPUT_NAMES.index(output.name))
    del model.graph.output[:]
    model.graph.output.extend(ordered)
    return model


def drop_unused_inputs(model: onnx.ModelProto) -> None:
    """Remove graph inputs other than the image that no node reads.

    tf2onnx leaves some captured tensors of real OD API exports (three float
    [2] captures of the Faster R-CNN ResNet-50 zoo model) as dangling graph
    inputs after its optimizers removed their consumers; nothing can feed them.
    """
    used = set()

    def collect(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            used.update(node.input)
            for attribute in node.attribute:
                for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                    collect(subgraph)

    collect(model.graph)
    used.update(output.name for output in model.graph.output)
    kept = [value for value in model.graph.input if value.name == INPUT_NAME or value.name in used]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)


def _complete_loop_signatures(graph: onnx.GraphProto) -> None:
    """Give every Loop body's iteration-number and condition inputs their scalar shape.

    The ONNX spec fixes them (int64 and bool scalars), but tf2onnx sometimes
    leaves the iteration number without a shape ("missing output shape for
    ..._loop_counter"), seen on a ``tf.map_fn`` over the batch like the OD
    API exporter's; ONNX Runtime then refuses to run the Loop ("subgraph
    input 0 has unknown shape").
    """
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                _complete_loop_signatures(subgraph)
        if node.op_type != "Loop":
            continue
        body = next(a.g for a in node.attribute if a.name == "body")
        for value, elem_type in zip(body.input[:2], (onnx.TensorProto.INT64, onnx.TensorProto.BOOL)):
            tensor_type = value.type.tensor_type
            if not tensor_type.elem_type:
                tensor_type.elem_type = elem_type
            if not tensor_type.HasField("shape"):
                tensor_type.shape.SetInParent()  # rank 0


def _adopt_static_output_shapes(model: onnx.ModelProto, signature: ServingSignature) -> None:
    """Give the ONNX outputs the sizes the TF signature declares where tf2onnx left them symbolic.

    OD API exports declare K statically ([1, 300, 4]), but the padding that
    produces it is data-dependent, so neither tf2onnx nor ONNX shape inference
    can derive it; runtimes such as TensorRT plan better with it.
    """
    for output in model.graph.output:
        declared = signature.function.structured_outputs[output.name].shape
        if declared.rank != len(output.type.tensor_type.shape.dim):
            continue
        for dim, size in zip(output.type.tensor_type.shape.dim, declared.as_list()):
            if size is not None and not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = size


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim
    )


def value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    return TensorSpec(value.name, dtype, _dims(value) if value.type.tensor_type.HasField("shape") else None)


def _check_onnx_contract(model: onnx.ModelProto) -> None:
    outputs = [value_spec(v) for v in model.graph.output]
    problems = contract_problems("converted ONNX model", [value_spec(v) for v in model.graph.input], outputs, strict=True)
    extra = sorted({v.name for v in outputs} - set(OUTPUT_NAMES))
    if extra:
        problems.append(f"converted ONNX model kept outputs outside the contract: {', '.join(extra)}")
    if problems:
        raise ExportError("; ".join(problems))


def _with_batch_dim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The shape-inferred model with a symbolic batch if ONNX Runtime runs batches of 2 correctly.

    Returns the model and "" when the batch is symbolic, or the fixed-batch
    model and why the symbolic one was rejected.
    """
    symbolic = onnx.ModelProto()
    symbolic.CopyFrom(model)
    for value in [*symbolic.graph.input, *symbolic.graph.output]:
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    symbolic = infer_shapes(symbolic)
    problem = _batch_problem(symbolic)
    if not problem:
        return symbolic, ""
    fixed = infer_shapes(model)
    open_session(fixed.SerializeToString())  # the file must at least load in ONNX Runtime
    return fixed, problem


def _batch_problem(model: onnx.ModelProto) -> str:
    """Why ``model`` does not run a batch of 2 like two batches of 1 ("" when it does)."""
    height, width = _dims(model.graph.input[0])[1:3]
    size = (height, width) if isinstance(height, int) and isinstance(width, int) else _PROBE_SIZE
    tiles = synthetic_tiles(2, size, seed=0)
    try:
        session = open_session(model.SerializeToString())
        batched = run_onnx(session, tiles, batch_size=2)
    except Exception as exc:  # whatever ONNX Runtime raises, the answer is "cannot batch"
        return f"ONNX Runtime fails on a batch of 2: {str(exc).strip().splitlines()[0]}"
    if len(batched) != 2:
        return f"the graph returns {len(batched)} result(s) for a batch of 2"
    if not compare_detections(run_onnx(session, tiles), batched, score_floor=0.0).passed:
        return "a batch of 2 gives other detections than one tile at a time"
    return ""


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    # data_prop propagates shape values through Shape/Gather/Concat chains, which
    # tf2onnx emits for every dynamic reshape; strict_mode=False keeps what it cannot infer.
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def tool_versions() -> dict[str, str]:
    tf = import_optional("tensorflow")
    tf2onnx = import_optional("tf2onnx")
    return {
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "minescan": minescan.__version__,
    }


def write_model_atomically(model: onnx.ModelProto, out_path: Path) -> int:
    """Write ``model`` to ``out_path`` atomically (see :mod:`minescan.results.atomic`); return its size."""
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError(f"ONNX model for {out_path} is {model.ByteSize()} bytes, over protobuf's 2 GiB limit")
    return write_atomically(out_path, model.SerializeToString())
