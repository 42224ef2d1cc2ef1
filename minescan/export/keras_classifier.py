"""Keras tile classifiers -> ONNX in minescan's classifier contract, with metadata.

A tile classifier takes windows of a scene and answers class probabilities:
``input_tensor`` uint8 [N, H, W, 3] -> one output ``probabilities`` float32
[N, C] (a softmax over C classes, or one sigmoid [N, 1] for a binary model:
the probability of its one, positive, class).  :func:`export_keras_classifier`
turns a Keras model into such an ONNX file:

1. load the source (:func:`load_keras_classifier`): a ``.keras`` file
   (``keras.models.load_model``) or a SavedModel directory (``model.export(dir)``
   in Keras 3, or any SavedModel whose ``serving_default`` takes one image and
   returns one [N, C] tensor) and check its shapes: one input [N, H, W, 3],
   one output of rank 2;
2. wrap it in a ``tf.function`` over ``input_tensor`` uint8 [None, H, W, 3]
   that casts to float32, applies the preprocessing the model was trained
   with and calls it, so the file takes the scan's uint8 windows as they are.
   The preprocessing (``preprocess``) is one of :data:`PREPROCESSING`:
   ``mobilenet_v2`` (x / 127.5 - 1, ``keras.applications.mobilenet_v2.preprocess_input``),
   ``unit`` (x / 255) or ``none`` (the model takes 0-255 itself: EfficientNetV2
   and models with a ``Rescaling`` layer); ``auto`` picks ``none`` when the
   model has a Rescaling layer, ``mobilenet_v2`` when it contains a
   ``keras.applications`` MobileNetV2 (a layer or graph scope named
   ``mobilenetv2...``) and ``none`` otherwise, and says why;
3. convert with tf2onnx (``from_function``: Keras 3 models called inside a
   ``tf.function`` convert; ``from_keras`` does not take Keras 3) with a
   symbolic batch, constants the function captured (a ``Normalization``
   layer's mean and variance) folded in as initializers, and check on
   synthetic windows that a batch runs and the outputs are probabilities
   (within [0, 1]);
4. write minescan's metadata (``minescan.task`` = ``classifier``, labels,
   input size, the recipe that renders scenes to its RGB, input statistics,
   source digest, tool versions) and the file atomically.

:func:`verify_keras_classifier` runs the wrapped function (TF) and the ONNX
file (ONNX Runtime) on the same windows
(:func:`~minescan.export.verify.compare_probabilities`).  TensorFlow, Keras
and tf2onnx are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx
import onnx.numpy_helper

from minescan.export._tensorflow import import_optional
from minescan.export.choices import DEFAULT_OPSET, PREPROCESSES
from minescan.export.convert import BATCH_DIM, drop_unused_inputs, infer_shapes, recipe_of, value_spec, tool_versions, write_model_atomically
from minescan.export.detections import open_session, synthetic_tiles
from minescan.export.errors import ExportError
from minescan.export.onnx_metadata import write_metadata
from minescan.export.saved_model import SIGNATURE, saved_model_graph, saved_model_sha256
from minescan.export.verify import ProbabilityReport, compare_probabilities, run_classifier
from minescan.model.contract import INPUT_NAME, ContractError, check_classifier
from minescan.model.labels import LabelsError, parse_labels
from minescan.model.metadata import ModelMetadata, Recipe
from minescan.model.statistics import InputStatistics

OUTPUT_NAME = "probabilities"
KERAS_SUFFIXES = (".keras",)
PREPROCESSING: Mapping[str, str] = {  # what each --preprocess choice bakes in front of the model
    "mobilenet_v2": "x / 127.5 - 1 (keras.applications.mobilenet_v2.preprocess_input)",
    "unit": "x / 255",
    "none": "none, the model takes 0-255",
}
PROBABILITY_SLACK = 1e-3  # outputs this far outside [0, 1] are not probabilities (logits: no softmax/sigmoid)
_PROBE_WINDOWS = 4


@dataclass(frozen=True)
class ClassifierExportReport:
    """What :func:`export_keras_classifier` wrote and how."""

    onnx_path: Path
    opset: int
    preprocess: str  # the preprocessing baked in (a PREPROCESSING key)
    preprocess_reason: str  # why (the choice given, or what auto found)
    classes: int
    nodes: int
    size_bytes: int
    seconds: float
    metadata: ModelMetadata

    def format(self) -> str:
        """A few readable lines."""
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.labels.items()))
        height, width = self.metadata.input_size or (0, 0)
        kind = "one sigmoid output" if self.classes == 1 else f"{self.classes} classes"
        return "\n".join([
            f"wrote {self.onnx_path} ({self.size_bytes / 1e6:.1f} MB, {self.nodes} nodes, opset {self.opset}) in {self.seconds:.1f} s",
            f"tile classifier: windows {height}x{width} px, batch dynamic, {kind}; labels {labels}",
            f"preprocessing {self.preprocess}: {PREPROCESSING[self.preprocess]} ({self.preprocess_reason})",
        ])


@dataclass
class KerasClassifier:
    """A loaded classifier wrapped for export: ``function`` maps ``input_tensor`` uint8 windows to ``probabilities``."""

    source: Path
    function: Any  # tf.function(input_tensor uint8 [None, H, W, 3]) -> {"probabilities": float32 [None, C]}
    input_spec: Any  # its tf.TensorSpec
    size: tuple[int, int]
    classes: int
    preprocess: str
    preprocess_reason: str
    sha256: str
    owner: Any  # the Keras model or loaded SavedModel the function reads (kept alive with it)

    def probabilities(self, tiles: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """The TF reference: probabilities [N, C] for uint8 windows [N, H, W, 3]."""
        parts = [self.function(tiles[start : start + batch_size])[OUTPUT_NAME].numpy()
                 for start in range(0, len(tiles), batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)


def is_keras_file(path: str | Path) -> bool:
    """Whether ``path`` names a Keras model file (by its suffix)."""
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def saved_model_is_classifier(directory: str | Path) -> bool:
    """Whether the SavedModel's ``serving_default`` returns one rank-2 tensor (a classifier), read from the
    graph file's signature definition without loading the model; False when it cannot tell."""
    graph = saved_model_graph(directory)
    import_optional("tensorflow")
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        if graph.suffix == ".pbtxt":
            text_format.Parse(graph.read_text(), proto)
        else:
            proto.ParseFromString(graph.read_bytes())
    except Exception:  # an unreadable graph file: the detector path reports it properly
        return False
    for meta_graph in proto.meta_graphs:
        if SIGNATURE in meta_graph.signature_def:
            outputs = list(meta_graph.signature_def[SIGNATURE].outputs.values())
            return (len(outputs) == 1 and not outputs[0].tensor_shape.unknown_rank
                    and len(outputs[0].tensor_shape.dim) == 2)
    return False


def load_keras_classifier(source: str | Path, *, preprocess: str = "auto", window: int | None = None) -> KerasClassifier:
    """Load ``source`` (a ``.keras`` file or a SavedModel directory) and wrap it for export (see the module doc).

    ``window`` fixes the window size of a model that takes any size (and must
    match a model that fixes it).
    """
    if preprocess not in PREPROCESSES:
        raise ExportError(f"unknown preprocessing {preprocess!r}; choose from {', '.join(PREPROCESSES)}")
    if window is not None and window < 16:
        raise ExportError(f"--window must be at least 16 px, got {window}")
    source = Path(source)
    tf = import_optional("tensorflow")
    if is_keras_file(source):
        call, dtype, in_shape, out_shape, found, owner = _keras_model(source)
        sha256 = _file_sha256(source)
    else:
        call, dtype, in_shape, out_shape, found, owner = _saved_model(source)
        sha256 = saved_model_sha256(source)
    size = _window(source, in_shape, window)
    if out_shape is not None and len(out_shape) != 2:
        raise ExportError(f"{source}: the model's output has shape {_show(out_shape)}; a tile classifier returns "
                          f"[batch, classes] probabilities (rank 2)")
    chosen, reason = _choose(preprocess, found)
    baked = _BAKED[chosen]
    spec = tf.TensorSpec([None, *size, 3], tf.uint8, name=INPUT_NAME)

    # autograph=False: the wrapper is plain graph code, and AutoGraph would warn about it.
    @tf.function(input_signature=[spec], autograph=False)
    def classify(input_tensor: Any) -> dict[str, Any]:
        pixels = baked(tf.cast(input_tensor, tf.float32))
        return {OUTPUT_NAME: tf.cast(call(tf.cast(pixels, dtype)), tf.float32)}

    classes = out_shape[1] if out_shape is not None and isinstance(out_shape[1], int) else None
    if classes is None:  # the model does not declare it: ask it
        classes = int(classify(np.zeros((1, *size, 3), np.uint8))[OUTPUT_NAME].shape[1])
    return KerasClassifier(source, classify, spec, size, classes, chosen, reason, sha256, owner)


def classifier_labels(labels: Mapping[int, str] | str | None, classes: int, where: str | Path) -> dict[int, str]:
    """The 1-based labels of a classifier with ``classes`` outputs; ``labels`` a mapping or a ``--labels`` value."""
    if labels is None:
        raise ExportError(missing_labels(where))
    if isinstance(labels, str):
        try:
            labels = parse_labels(labels)
        except LabelsError as exc:
            raise ExportError(str(exc)) from exc
    labels = dict(labels)
    want = list(range(1, classes + 1))
    if sorted(labels) != want or not all(isinstance(name, str) and name.strip() for name in labels.values()):
        names = "one name, its positive class" if classes == 1 else f"{classes} names, in the order of its outputs"
        raise ExportError(f"{where}: the model has {classes} output(s), so --labels needs {names}; got "
                          f"{len(labels)}: {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}")
    return labels


def export_keras_classifier(
    source: str | Path | KerasClassifier,
    out_path: str | Path,
    *,
    labels: Mapping[int, str] | str | None,
    preprocess: str = "auto",
    opset: int = DEFAULT_OPSET,
    preprocessing: Mapping[str, Any] | None = None,
    input_statistics: InputStatistics | None = None,
    window: int | None = None,
) -> ClassifierExportReport:
    """Convert the Keras classifier ``source`` to an ONNX tile classifier at ``out_path`` (see the module doc).

    ``source`` may be a :class:`KerasClassifier` already loaded (``preprocess``
    and ``window`` are then its own).  ``labels`` maps 1-based ids to the C
    class names (a ``--labels`` value is parsed); ``preprocessing`` overrides
    keys of the recipe (:data:`~minescan.export.convert.DEFAULT_PREPROCESSING`),
    ``input_statistics`` the calibration input, for the domain-shift guard.
    """
    started = time.perf_counter()
    where = source.source if isinstance(source, KerasClassifier) else source
    if labels is None:
        raise ExportError(missing_labels(where))
    recipe = recipe_of(preprocessing)
    loaded = source if isinstance(source, KerasClassifier) else load_keras_classifier(source, preprocess=preprocess, window=window)
    class_names = classifier_labels(labels, loaded.classes, loaded.source)
    model = _convert(loaded, opset)
    metadata = ModelMetadata(
        labels=class_names,
        input_size=loaded.size,
        recipe=Recipe.from_json(recipe),
        source_sha256=loaded.sha256,
        tool_versions={**tool_versions(), "keras": import_optional("keras").__version__},
        input_statistics=input_statistics,
        task="classifier",
    )
    write_metadata(model, metadata)
    out_path = Path(out_path)
    size = write_model_atomically(model, out_path)
    return ClassifierExportReport(
        onnx_path=out_path, opset=opset, preprocess=loaded.preprocess, preprocess_reason=loaded.preprocess_reason,
        classes=loaded.classes, nodes=len(model.graph.node), size_bytes=size, seconds=time.perf_counter() - started,
        metadata=metadata,
    )


def verify_keras_classifier(classifier: KerasClassifier, onnx_path: str | Path | bytes, tiles: np.ndarray) -> ProbabilityReport:
    """TF (the wrapped function) against ONNX Runtime on the same uint8 windows."""
    return compare_probabilities(classifier.probabilities(tiles), run_classifier(onnx_path, tiles))


def _convert(loaded: KerasClassifier, opset: int) -> onnx.ModelProto:
    tf2onnx = import_optional("tf2onnx")
    try:
        model, _ = tf2onnx.convert.from_function(loaded.function, input_signature=[loaded.input_spec], opset=opset)
    except Exception as exc:  # tf2onnx raises bare ValueError/RuntimeError/KeyError on graphs it cannot handle
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"tf2onnx cannot convert {loaded.source} at opset {opset}: {first_line}") from exc
    drop_unused_inputs(model)
    _fold_captured_constants(model, loaded)
    for value in (model.graph.input[0], model.graph.output[0]):  # tf2onnx names the batch unk__N
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    model = infer_shapes(model)
    where = f"converted ONNX model of {loaded.source}"
    try:
        check_classifier(where, [value_spec(v) for v in model.graph.input], [value_spec(v) for v in model.graph.output])
    except ContractError as exc:
        raise ExportError(str(exc)) from exc
    probe = synthetic_tiles(_PROBE_WINDOWS, loaded.size, seed=0)
    values = run_classifier(open_session(model.SerializeToString()), probe, batch_size=_PROBE_WINDOWS)
    if values.shape != (_PROBE_WINDOWS, loaded.classes):
        raise ExportError(f"{where} answers {list(values.shape)} for {_PROBE_WINDOWS} windows, expected "
                          f"[{_PROBE_WINDOWS}, {loaded.classes}]")
    low, high = float(values.min()), float(values.max())
    if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK:
        raise ExportError(f"{loaded.source}: the model's outputs range over [{low:.3g}, {high:.3g}] on synthetic windows, "
                          "so they are not probabilities; end it in a softmax (or one sigmoid)")
    return model


def _fold_captured_constants(model: onnx.ModelProto, loaded: KerasClassifier) -> None:
    """Turn graph inputs that are constants the function captured into initializers, in place.

    tf2onnx freezes variables, but a constant tensor a layer holds outside its
    variables (EfficientNetV2's Normalization mean and variance) stays a
    placeholder of the traced graph and comes out as a graph input that nothing
    could feed.
    """
    tf = import_optional("tensorflow")
    concrete = loaded.function.get_concrete_function(loaded.input_spec)
    captured = {internal.name: external for external, internal in concrete.graph.captures if external.dtype != tf.resource}
    kept = []
    for value in model.graph.input:
        constant = captured.get(value.name) if value.name != INPUT_NAME else None
        if constant is None or not hasattr(constant, "numpy"):
            kept.append(value)
            continue
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(constant.numpy()), value.name))
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)


def _keras_model(path: Path):
    """(call, input dtype, input shape, output shape, layer names, model) of a ``.keras`` file."""
    if not path.is_file():
        raise ExportError(f"{path}: no such Keras model file")
    keras = import_optional("keras")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/... for files it cannot read
        raise ExportError(f"cannot load Keras model {path}: {type(exc).__name__}: {_first_line(exc)}") from exc
    inputs, outputs = list(getattr(model, "inputs", None) or []), list(getattr(model, "outputs", None) or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"{path}: a tile classifier has one input and one output; the model has {len(inputs)} "
                          f"input(s) and {len(outputs)} output(s)")
    found = {"layers": [(layer.name, type(layer).__name__) for layer in _walk(model)]}

    def call(pixels: Any) -> Any:
        result = model(pixels, training=False)
        return result[0] if isinstance(result, (list, tuple)) else result

    dtype = getattr(inputs[0], "dtype", None) or "float32"
    return call, dtype, _shape(inputs[0].shape), _shape(outputs[0].shape), found, model


def _saved_model(directory: Path):
    """(call, input dtype, input shape, output shape, graph text, module) of a SavedModel's ``serving_default``."""
    graph = saved_model_graph(directory)
    tf = import_optional("tensorflow")
    try:
        module = tf.saved_model.load(str(directory))
    except Exception as exc:  # TF reports unreadable SavedModels with many exception types
        raise ExportError(f"cannot load SavedModel {directory}: {type(exc).__name__}: {_first_line(exc)}") from exc
    signatures = dict(module.signatures)
    if SIGNATURE not in signatures:
        raise ExportError(f"SavedModel {directory} has no {SIGNATURE!r} signature (signatures: {', '.join(sorted(signatures)) or 'none'})")
    function = signatures[SIGNATURE]
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"SavedModel {directory} signature {SIGNATURE!r}: a tile classifier takes one image and returns one "
                          f"[batch, classes] tensor; it has inputs {', '.join(sorted(inputs)) or 'none'} and outputs "
                          f"{', '.join(sorted(outputs)) or 'none'}")
    (in_name, in_spec), (out_name, out_spec) = next(iter(inputs.items())), next(iter(outputs.items()))

    def call(pixels: Any) -> Any:
        return function(**{in_name: pixels})[out_name]

    found = {"graph": graph.read_bytes().lower()}
    in_shape = None if in_spec.shape.rank is None else tuple(in_spec.shape.as_list())
    out_shape = None if out_spec.shape.rank is None else tuple(out_spec.shape.as_list())
    return call, in_spec.dtype, in_shape, out_shape, found, module


def _window(source: Path, shape: tuple | None, window: int | None) -> tuple[int, int]:
    """The (H, W) windows the export takes: the model's own, else ``window``."""
    if shape is None or len(shape) != 4 or shape[3] not in (3, None):
        raise ExportError(f"{source}: the model's input has shape {_show(shape)}; a tile classifier takes [batch, H, W, 3] images")
    height, width = shape[1:3]
    if isinstance(height, int) and isinstance(width, int):
        if window is not None and (window, window) != (height, width):
            raise ExportError(f"{source}: the model takes {height}x{width} px windows, not --window {window}")
        return height, width
    if window is None:
        raise ExportError(f"{source}: the model takes images of any size ({_show(shape)}); give --window N, the px of the "
                          "square windows it was trained on")
    if (isinstance(height, int) and height != window) or (isinstance(width, int) and width != window):
        raise ExportError(f"{source}: the model's input {_show(shape)} does not fit --window {window}")
    return window, window


def _choose(preprocess: str, found: dict) -> tuple[str, str]:
    """The preprocessing to bake and why (see the module doc for ``auto``)."""
    if preprocess != "auto":
        return preprocess, "as --preprocess asked"
    if "layers" in found:
        layers = found["layers"]
        rescaling = next((name for name, kind in layers if kind == "Rescaling"), None)
        mobilenet = next((name for name, _ in layers if name.lower().startswith("mobilenetv2")), None)
        efficientnet = next((name for name, _ in layers if name.lower().startswith("efficientnetv2")), None)
    else:  # a SavedModel: its graph's name scopes
        graph = found["graph"]
        rescaling = "rescaling" if b"rescaling" in graph else None
        mobilenet = "mobilenetv2" if b"mobilenetv2" in graph else None
        efficientnet = "efficientnetv2" if b"efficientnetv2" in graph else None
    if rescaling:
        return "none", f"auto: its Rescaling layer {rescaling!r} takes 0-255 input"
    if mobilenet:
        return "mobilenet_v2", f"auto: it contains the keras.applications MobileNetV2 {mobilenet!r}, trained on x / 127.5 - 1"
    if efficientnet:
        return "none", f"auto: {efficientnet!r} (EfficientNetV2) rescales 0-255 input itself"
    return "none", ("auto: no MobileNetV2 and no Rescaling layer found, so the model is fed 0-255 as it is; "
                    "give --preprocess unit or mobilenet_v2 if it was trained on scaled input")


def _baked_mobilenet_v2(pixels: Any) -> Any:
    return pixels / 127.5 - 1.0


def _baked_unit(pixels: Any) -> Any:
    return pixels / 255.0


_BAKED: Mapping[str, Callable[[Any], Any]] = {"mobilenet_v2": _baked_mobilenet_v2, "unit": _baked_unit, "none": lambda pixels: pixels}


def _walk(layer: Any):
    """``layer`` and every layer nested in it (functional or sequential sub-models)."""
    yield layer
    for inner in getattr(layer, "layers", None) or []:
        yield from _walk(inner)


def missing_labels(where: str | Path) -> str:
    """The one line for a classifier exported without its class names."""
    return (f"{where}: a tile classifier records its class names; give --labels NAME,NAME (in the order of the model's "
            "outputs; one name, the positive class, for a single sigmoid output)")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shape(shape: Any) -> tuple | None:
    if shape is None:
        return None
    return tuple(None if d is None else int(d) for d in shape)


def _show(shape: tuple | None) -> str:
    return "unknown" if shape is None else "[" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
