"""The detector interface every backend implements.

A :class:`Detector` takes a batch of uint8 RGB tiles [B, H, W, 3] and answers
one :class:`~minescan.model.detections.TileDetections` per tile.  Backends
differ in where the model runs (ONNX Runtime on the CPU by default, a GPU
provider of ONNX Runtime, or a TensorRT engine; ``backend`` names it and
``notice`` says why it is not the GPU that ``auto`` looked for); they
agree on the model contract (:mod:`minescan.model.contract`) and on splitting
a batch larger than the model's fixed batch dimension.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from minescan.model.contract import ModelSignature
from minescan.model.detections import TileDetections
from minescan.model.metadata import ModelMetadata
from minescan.errors import MinescanError


class DetectorInputError(MinescanError):
    """A batch of tiles does not fit the model."""


class Detector(Protocol):
    """A loaded model in the OD API contract, ready to run."""

    backend: str
    notice: str | None
    concurrency: int  # how many detect() calls may usefully run at once (threads of a scan's inference stage)
    signature: ModelSignature
    metadata: ModelMetadata

    def detect(self, tiles: np.ndarray, score_threshold: float = 0.0) -> list[TileDetections]:
        """Detections for each tile of a uint8 [B, H, W, 3] batch."""
        ...


def check_tiles(tiles: np.ndarray, signature: ModelSignature) -> None:
    """Raise :class:`DetectorInputError` if ``tiles`` cannot be fed to a model of ``signature``."""
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[3] != 3:
        raise DetectorInputError(f"tiles must be uint8 [B, H, W, 3], got {tiles.dtype} {list(tiles.shape)}")
    h, w = tiles.shape[1:3]
    if (signature.height or h) != h or (signature.width or w) != w:
        raise DetectorInputError(
            f"tiles are {h}x{w} px but the model takes {signature.height}x{signature.width} px"
        )


def split_batch(tiles: np.ndarray, limit: int | None) -> Iterator[np.ndarray]:
    """Chunks of ``tiles`` no larger than ``limit`` (the model's fixed batch, if any)."""
    step = limit or len(tiles) or 1
    for start in range(0, len(tiles), step):
        yield tiles[start : start + step]
