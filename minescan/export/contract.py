"""The detector contract an exported model must meet.

minescan runs any model with the TF Object Detection API's ``serving_default``
interface: one uint8 image input ``input_tensor`` [batch, H, W, 3] and four
float32 outputs, ``detection_boxes`` [batch, K, 4] normalized (ymin, xmin,
ymax, xmax), ``detection_scores`` and ``detection_classes`` (1-based) [batch,
K] and ``num_detections`` [batch].  Real OD API exports add outputs the scan
does not use (raw boxes, multiclass scores, anchor indices); the exporter drops
them.  The same check runs on the TF signature before conversion and on the
ONNX graph after it, so a file that leaves the exporter meets the contract.
It is stricter than the engine's load-time check
(:mod:`minescan.model.contract`, which shares the names): it requires the
OD API's float32 outputs and reports every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES

Dim = Union[int, str, None]
"""A dimension: a size, a symbolic name, or None when unknown."""

INPUT_DTYPE = "uint8"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's dtype (numpy name) and shape as a graph declares them (None: unknown rank)."""

    dtype: str
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True)
class _Expected:
    rank: int
    last_dim: int | None
    layout: str


OUTPUTS: Mapping[str, _Expected] = dict(
    zip(
        OUTPUT_NAMES,
        (
            _Expected(3, 4, "[batch, K, 4]"),
            _Expected(2, None, "[batch, K]"),
            _Expected(2, None, "[batch, K]"),
            _Expected(1, None, "[batch]"),
        ),
    )
)
"""The contract's outputs (boxes, scores, classes, count) in the order minescan writes them."""

OUTPUT_DTYPE = "float32"


def check_contract(inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec], where: str) -> list[str]:
    """The problems that keep a model's inputs/outputs from meeting the contract ([] when it does).

    ``where`` names the model in the messages (e.g. "SavedModel /m signature
    'serving_default'").  Extra outputs are not problems: the exporter drops them.
    """
    problems = []
    if INPUT_NAME not in inputs:
        problems.append(f"{where} has no input {INPUT_NAME!r} (inputs: {', '.join(sorted(inputs)) or 'none'})")
    else:
        spec = inputs[INPUT_NAME]
        if spec.dtype != INPUT_DTYPE:
            problems.append(f"{where} input {INPUT_NAME!r} is {spec.dtype}, expected {INPUT_DTYPE}")
        if not _shape_fits(spec.shape, 4, 3):
            problems.append(f"{where} input {INPUT_NAME!r} has shape {_show(spec.shape)}, expected [batch, H, W, 3]")
    if len(inputs) > 1:
        extra = sorted(set(inputs) - {INPUT_NAME})
        problems.append(f"{where} has inputs besides {INPUT_NAME!r}: {', '.join(extra)}")
    for name, expected in OUTPUTS.items():
        if name not in outputs:
            problems.append(f"{where} has no output {name!r} (outputs: {', '.join(sorted(outputs)) or 'none'})")
            continue
        spec = outputs[name]
        if spec.dtype != OUTPUT_DTYPE:
            problems.append(f"{where} output {name!r} is {spec.dtype}, expected {OUTPUT_DTYPE}")
        if not _shape_fits(spec.shape, expected.rank, expected.last_dim):
            problems.append(f"{where} output {name!r} has shape {_show(spec.shape)}, expected {expected.layout}")
    return problems


def _shape_fits(shape: tuple[Dim, ...] | None, rank: int, last_dim: int | None) -> bool:
    # Unknown ranks and symbolic or unknown sizes cannot be checked, so they pass.
    if shape is None:
        return True
    if len(shape) != rank:
        return False
    return last_dim is None or not isinstance(shape[-1], int) or shape[-1] == last_dim


def _show(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
