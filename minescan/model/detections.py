"""Detections of one tile, in the tile's pixel frame.

A detector answers every tile with a :class:`TileDetections`: boxes in tile
pixel coordinates on the pixel-corner convention (a box covering pixel
columns 3..7 has ``x0 = 3`` and ``x1 = 8``), their scores and 1-based class
ids.  Stitching and georeferencing build on this one value type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileDetections:
    """Boxes ``(x0, y0, x1, y1)`` float64 [M, 4], scores float32 [M], classes int32 [M]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.scores)
        if self.boxes.shape != (m, 4) or self.classes.shape != (m,):
            raise ValueError(
                f"detections disagree in length: boxes {self.boxes.shape}, "
                f"scores {self.scores.shape}, classes {self.classes.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "TileDetections":
        return cls(np.zeros((0, 4), np.float64), np.zeros(0, np.float32), np.zeros(0, np.int32))


def from_normalized(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    count: int,
    height: int,
    width: int,
    score_threshold: float,
) -> TileDetections:
    """Turn one image's contract outputs into pixel-frame detections.

    ``boxes`` are the model's normalized (ymin, xmin, ymax, xmax) for an input
    of ``height`` x ``width``; only the first ``count`` rows are real, and of
    those only scores >= ``score_threshold`` are kept.  Boxes are clipped to
    the input and degenerate ones dropped.
    """
    count = max(0, min(int(count), len(scores)))
    b = np.asarray(boxes[:count], np.float64)
    s = np.asarray(scores[:count], np.float32)
    c = np.rint(np.asarray(classes[:count])).astype(np.int32)
    pixel = np.stack(
        [
            np.clip(b[:, 1] * width, 0, width),
            np.clip(b[:, 0] * height, 0, height),
            np.clip(b[:, 3] * width, 0, width),
            np.clip(b[:, 2] * height, 0, height),
        ],
        axis=1,
    ).reshape(-1, 4)
    keep = (s >= score_threshold) & (pixel[:, 2] > pixel[:, 0]) & (pixel[:, 3] > pixel[:, 1])
    return TileDetections(pixel[keep], s[keep], c[keep])
