"""The TF Object Detection API model contract, checked on load.

What the OD API exports and tf2onnx keeps: one input ``input_tensor`` of
uint8 [N, H, W, 3] and four outputs, ``detection_boxes`` [N, K, 4] normalized
(ymin, xmin, ymax, xmax), ``detection_scores`` [N, K], ``detection_classes``
[N, K] (1-based, float in real exports) and ``num_detections`` [N].  Extra
outputs (raw boxes, anchor indices...) are allowed and ignored.  Dimensions
may be fixed or symbolic; a fixed batch (the OD API fixes it at 1) makes the
engine split larger batches, fixed H and W fix the tile size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from minescan.errors import MinescanError

INPUT_NAME = "input_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
_OUTPUT_RANKS = {"detection_boxes": 3, "detection_scores": 2, "detection_classes": 2, "num_detections": 1}
_NUMERIC = {"float", "float16", "double", "int32", "int64", "uint8", "int8", "int16", "uint16", "uint32", "uint64"}


class ContractError(MinescanError):
    """A model is outside the TF Object Detection API contract."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as a backend reports it: element type name and dims (None = symbolic)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelSignature:
    """The contract facts of a checked model."""

    batch: int | None
    height: int | None
    width: int | None
    max_detections: int | None


def _fixed(dim: int | None) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_contract(model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> ModelSignature:
    """Check a model's inputs and outputs; raise :class:`ContractError` naming what is wrong."""
    by_name = {t.name: t for t in inputs}
    if INPUT_NAME not in by_name:
        found = ", ".join(t.name for t in inputs) or "none"
        raise ContractError(f"{model}: no input {INPUT_NAME!r} (inputs: {found})")
    extra = [t.name for t in inputs if t.name != INPUT_NAME]
    if extra:
        raise ContractError(f"{model}: unexpected extra inputs {extra}; the contract has only {INPUT_NAME!r}")
    image = by_name[INPUT_NAME]
    if image.dtype != "uint8":
        raise ContractError(f"{model}: input {INPUT_NAME!r} is {image.dtype}, the contract needs uint8")
    if len(image.shape) != 4:
        raise ContractError(f"{model}: input {INPUT_NAME!r} has rank {len(image.shape)}, the contract needs [N, H, W, 3]")
    if _fixed(image.shape[3]) not in (None, 3):
        raise ContractError(f"{model}: input {INPUT_NAME!r} has {image.shape[3]} channels, the contract needs 3 (RGB)")

    out_by_name = {t.name: t for t in outputs}
    missing = [n for n in OUTPUT_NAMES if n not in out_by_name]
    if missing:
        found = ", ".join(t.name for t in outputs) or "none"
        raise ContractError(f"{model}: missing output(s) {', '.join(missing)} (outputs: {found})")
    for name, rank in _OUTPUT_RANKS.items():
        spec = out_by_name[name]
        if spec.dtype not in _NUMERIC:
            raise ContractError(f"{model}: output {name!r} is {spec.dtype}, the contract needs a numeric tensor")
        if len(spec.shape) != rank:
            raise ContractError(f"{model}: output {name!r} has rank {len(spec.shape)}, the contract needs rank {rank}")
    box_dims = out_by_name["detection_boxes"].shape
    if _fixed(box_dims[2]) not in (None, 4):
        raise ContractError(f"{model}: output 'detection_boxes' has last dimension {box_dims[2]}, the contract needs 4")
    return ModelSignature(
        batch=_fixed(image.shape[0]),
        height=_fixed(image.shape[1]),
        width=_fixed(image.shape[2]),
        max_detections=_fixed(box_dims[1]),
    )
