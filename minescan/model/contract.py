"""The TF Object Detection API detector contract: its names, and the one check of it.

minescan runs any model with the OD API's ``serving_default`` interface: one
input ``input_tensor`` of uint8 [N, H, W, 3] and four outputs,
``detection_boxes`` [N, K, 4] normalized (ymin, xmin, ymax, xmax),
``detection_scores`` [N, K], ``detection_classes`` [N, K] (1-based, float in
real exports) and ``num_detections`` [N].  Extra outputs (raw boxes, anchor
indices...) are allowed; the scan ignores them and the exporter drops them.
Dimensions may be fixed, symbolic or unknown (an unknown rank passes too: it
cannot be checked); a fixed batch (the OD API fixes it at 1) makes the engine
split larger batches, fixed H and W fix the tile size.

One check, two modes (:func:`contract_problems` lists every problem at once):

* lenient, :func:`check_contract`: what a backend checks when it loads a
  model; any numeric output type; raises :class:`ContractError` and returns
  the :class:`ModelSignature` (batch, tile size, K) the engine runs by;
* strict (``strict=True``): what the exporter requires of the TF signature
  before conversion and of the ONNX graph after it, so that every file that
  leaves the exporter meets the contract: the OD API's float32 outputs.

Element types are named as numpy does (``float32``); ONNX Runtime's and
TensorRT's ``float``/``double`` are read as ``float32``/``float64``, while
messages show the name the backend reported.  Pure values: no onnx or
onnxruntime import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from minescan.errors import MinescanError

INPUT_NAME = "input_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
"""The contract's outputs (boxes, scores, classes, count) in the order minescan reads and writes them."""
INPUT_DTYPE = "uint8"
OUTPUT_DTYPE = "float32"
"""The output type the strict mode requires (the OD API's)."""

Dim = Union[int, str, None]
"""A dimension: a size, a symbolic name, or None when unknown."""


@dataclass(frozen=True)
class _Layout:
    rank: int
    last_dim: int | None
    text: str


_INPUT_LAYOUT = _Layout(4, 3, "[batch, H, W, 3]")
_OUTPUT_LAYOUTS: Mapping[str, _Layout] = dict(
    zip(
        OUTPUT_NAMES,
        (_Layout(3, 4, "[batch, K, 4]"), _Layout(2, None, "[batch, K]"), _Layout(2, None, "[batch, K]"), _Layout(1, None, "[batch]")),
    )
)
_ALIASES = {"float": "float32", "double": "float64", "half": "float16"}
_NUMERIC = {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


class ContractError(MinescanError):
    """A model is outside the TF Object Detection API contract."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as a graph or backend declares it.

    ``dtype`` is the element type's name (numpy's, or ONNX Runtime's/TensorRT's
    ``float``); ``shape`` its dims (int, a symbolic name or None when unknown),
    or None when even the rank is unknown.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True)
class ModelSignature:
    """The contract facts of a checked model (None: not fixed)."""

    batch: int | None
    height: int | None
    width: int | None
    max_detections: int | None


def contract_problems(
    where: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, strict: bool = False
) -> list[str]:
    """Every problem that keeps a model's inputs/outputs from meeting the contract ([] when it does).

    ``where`` names the model and starts each message (e.g. "SavedModel /m
    signature 'serving_default'").  ``strict`` requires float32 outputs, as the
    OD API exports them; otherwise any numeric type will do.
    """
    problems = _input_problems(where, inputs)
    out_by_name = {t.name: t for t in outputs}
    for name, layout in _OUTPUT_LAYOUTS.items():
        if name not in out_by_name:
            problems.append(f"{where} has no output {name!r} (outputs: {', '.join(sorted(out_by_name)) or 'none'})")
            continue
        spec = out_by_name[name]
        dtype = _canonical(spec.dtype)
        if strict and dtype != OUTPUT_DTYPE:
            problems.append(f"{where} output {name!r} is {spec.dtype}, expected {OUTPUT_DTYPE}")
        elif dtype not in _NUMERIC:
            problems.append(f"{where} output {name!r} is {spec.dtype}, expected a numeric type")
        if not _fits(spec.shape, layout):
            problems.append(f"{where} output {name!r} has shape {_show(spec.shape)}, expected {layout.text}")
    return problems


def _input_problems(where: str, inputs: Sequence[TensorSpec]) -> list[str]:
    """The problems of the one input every minescan model takes, ``input_tensor`` uint8 [batch, H, W, 3]."""
    problems = []
    by_name = {t.name: t for t in inputs}
    if INPUT_NAME not in by_name:
        problems.append(f"{where} has no input {INPUT_NAME!r} (inputs: {', '.join(sorted(by_name)) or 'none'})")
    else:
        spec = by_name[INPUT_NAME]
        if _canonical(spec.dtype) != INPUT_DTYPE:
            problems.append(f"{where} input {INPUT_NAME!r} is {spec.dtype}, expected {INPUT_DTYPE}")
        if not _fits(spec.shape, _INPUT_LAYOUT):
            problems.append(f"{where} input {INPUT_NAME!r} has shape {_show(spec.shape)}, expected {_INPUT_LAYOUT.text}")
    extra = sorted(set(by_name) - {INPUT_NAME})
    if extra and INPUT_NAME in by_name:  # without it, the missing input already lists them
        problems.append(f"{where} has inputs besides {INPUT_NAME!r}: {', '.join(extra)}")
    return problems


def check_contract(
    where: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, strict: bool = False
) -> ModelSignature:
    """Check a model; raise :class:`ContractError` with every problem (one line) or return its signature."""
    problems = contract_problems(where, inputs, outputs, strict=strict)
    if problems:
        raise ContractError("; ".join(problems))
    image = next(t for t in inputs if t.name == INPUT_NAME).shape
    boxes = next(t for t in outputs if t.name == "detection_boxes").shape
    return ModelSignature(
        batch=_fixed(image, 0),
        height=_fixed(image, 1),
        width=_fixed(image, 2),
        max_detections=_fixed(boxes, 1),
    )


def _canonical(dtype: str) -> str:
    return _ALIASES.get(dtype, dtype)


def _fixed(shape: tuple[Dim, ...] | None, axis: int) -> int | None:
    dim = None if shape is None else shape[axis]
    return dim if isinstance(dim, int) and dim > 0 else None


def _fits(shape: tuple[Dim, ...] | None, layout: _Layout) -> bool:
    # Unknown ranks and symbolic or unknown sizes cannot be checked, so they pass.
    if shape is None:
        return True
    if len(shape) != layout.rank:
        return False
    last = shape[-1]
    return layout.last_dim is None or not isinstance(last, int) or last <= 0 or last == layout.last_dim


def _show(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape) + "]"


# Tile classifiers: input_tensor uint8 [N, H, W, 3] -> one output [N, C] of class probabilities.
@dataclass(frozen=True)
class ClassifierSignature:
    """The facts of a checked classifier (None: not fixed): batch, window size, classes, its output's name."""

    batch: int | None
    height: int | None
    width: int | None
    classes: int | None
    output: str


def classifier_problems(where: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[str]:
    """Every problem that keeps a model from being a tile classifier ([] when it is one)."""
    problems = _input_problems(where, inputs)
    if len(outputs) != 1:
        problems.append(f"{where} has {len(outputs)} outputs; a classifier has one, [batch, classes]")
        return problems
    spec = outputs[0]
    if _canonical(spec.dtype) not in ("float16", "float32", "float64"):
        problems.append(f"{where} output {spec.name!r} is {spec.dtype}, expected float probabilities")
    if spec.shape is not None and len(spec.shape) != 2:
        problems.append(f"{where} output {spec.name!r} has shape {_show(spec.shape)}, expected [batch, classes]")
    return problems


def model_task(where: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """``"detector"`` or ``"classifier"``, told by the outputs; :class:`ContractError` naming what was found otherwise."""
    detector_problems = contract_problems(where, inputs, outputs)
    if not detector_problems:
        return "detector"
    if not classifier_problems(where, inputs, outputs):
        return "classifier"
    if len(outputs) > 1 or any(t.name in OUTPUT_NAMES for t in outputs):  # meant as a detector: say what is wrong with it
        raise ContractError("; ".join(detector_problems))
    if len(outputs) == 1 and (outputs[0].shape is None or len(outputs[0].shape) == 2):  # meant as a classifier
        raise ContractError("; ".join(classifier_problems(where, inputs, outputs)))
    found_in = ", ".join(f"{t.name} {t.dtype} {_show(t.shape)}" for t in inputs) or "none"
    found_out = ", ".join(f"{t.name} {t.dtype} {_show(t.shape)}" for t in outputs) or "none"
    raise ContractError(
        f"{where} is neither a detector ({INPUT_NAME} uint8 [batch, H, W, 3] -> {', '.join(OUTPUT_NAMES)}) nor a "
        f"classifier ({INPUT_NAME} -> one [batch, classes] output); it has inputs {found_in} and outputs {found_out}"
    )


def check_classifier(where: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> ClassifierSignature:
    """Check a classifier; raise :class:`ContractError` (one line) or return its signature."""
    problems = classifier_problems(where, inputs, outputs)
    if problems:
        raise ContractError("; ".join(problems))
    image = next(t for t in inputs if t.name == INPUT_NAME).shape
    return ClassifierSignature(batch=_fixed(image, 0), height=_fixed(image, 1), width=_fixed(image, 2),
                               classes=_fixed(outputs[0].shape, 1), output=outputs[0].name)

