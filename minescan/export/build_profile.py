"""The optimization profile ``minescan build`` gives TensorRT, decided without TensorRT.

TensorRT compiles a network with run-time dimensions for a range of shapes,
an optimization profile: for each dynamic input a min, an opt (the shape the
kernels are tuned for) and a max shape.  minescan's one input is
``input_tensor`` [N, H, W, 3]:

- N, the batch, takes the requested ``min:opt:max`` range, unless the ONNX
  graph fixes it.  TF Object Detection API exports fix it at 1 (their graphs
  only process image 0), and so does ``minescan export``; the profile is then
  1:1:1 and the backend feeds the engine one tile at a time;
- H and W are pinned to one tile size (min = opt = max), taken from the graph
  when it fixes them, else from ``--size`` or the model's
  ``minescan.input_size`` metadata: a scan uses one tile size throughout,
  and a range of sizes would only make TensorRT tune for sizes never used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from minescan.engine.backends import ENGINE_SUFFIXES
from minescan.engine.engine_sidecar import Profile
from minescan.export.errors import ExportError

Batch = tuple[int, int, int]

DEFAULT_BATCH: Batch = (1, 8, 16)
DEFAULT_WORKSPACE_GB = 4.0
"""TensorRT's workspace memory pool cap: scratch memory for kernels that need it (tactics needing more are skipped)."""


def check_engine_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if its suffix marks a TensorRT engine (:data:`~minescan.engine.backends.ENGINE_SUFFIXES`), else raise.

    An engine under another name would later be taken for an ONNX model and handed to ONNX Runtime.
    """
    path = Path(path)
    if path.suffix.lower() not in ENGINE_SUFFIXES:
        raise ExportError(
            f"engine file {path}: name it with {', '.join(ENGINE_SUFFIXES)} so that minescan loads it as a TensorRT engine"
        )
    return path


def parse_batch(text: str) -> Batch:
    """``"1:8:16"`` -> (1, 8, 16); raise :class:`ExportError` unless 1 <= min <= opt <= max."""
    try:
        low, opt, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise ExportError(f"batch range {text!r}: expected MIN:OPT:MAX batch sizes like 1:8:16") from None
    return check_batch((low, opt, high))


def check_batch(batch: Sequence[int]) -> Batch:
    """``batch`` as (min, opt, max) if 1 <= min <= opt <= max; else raise :class:`ExportError`."""
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise ExportError(f"batch {':'.join(map(str, batch))}: need MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
    return batch[0], batch[1], batch[2]


def plan_profile(
    input_name: str, shape: Sequence[int], batch: Batch, size: tuple[int, int] | None, model: str
) -> Profile:
    """The profile for an input of ``shape`` (-1 = run-time dimension) given the requested batch and tile size."""
    fixed_batch = shape[0] if shape[0] > 0 else None
    pinned: list[int] = []
    for axis, what in ((1, "height"), (2, "width")):
        graph_dim = shape[axis] if shape[axis] > 0 else None
        asked = size[axis - 1] if size else None
        if graph_dim and asked and graph_dim != asked:
            raise ExportError(f"{model}: {input_name} has a fixed {what} of {graph_dim} px, not the {asked} asked for")
        if not (graph_dim or asked):
            raise ExportError(
                f"{model}: {input_name} has a run-time {what} and the model has no minescan.input_size metadata: "
                "pass --size HEIGHTxWIDTH, the tile size scans will use"
            )
        pinned.append(graph_dim or asked or 0)
    height, width = pinned
    note = ""
    if fixed_batch is not None:
        why = " (TF Object Detection API graphs process only image 0)" if fixed_batch == 1 else ""
        note = (
            f"the ONNX input's batch is fixed at {fixed_batch}{why}: profile {fixed_batch}:{fixed_batch}:{fixed_batch} "
            f"instead of {':'.join(map(str, batch))}; the backend splits larger batches"
        )
        batch = (fixed_batch, fixed_batch, fixed_batch)
    low, opt, high = ((n, height, width, 3) for n in batch)
    return Profile(input=input_name, min=low, opt=opt, max=high, note=note)
