"""Detections as values: a model's padded batch, one tile's, one scene's.

A model in the detector contract (:mod:`minescan.model.contract`) answers a
batch of N tiles with outputs padded to K per tile: a :class:`BatchDetections`
(normalized ``ymin, xmin, ymax, xmax`` boxes; tile i's valid entries are the
first ``counts[i]``).  :func:`from_normalized` turns one tile's share into a
:class:`TileDetections`: boxes in tile pixel coordinates on the pixel-corner
convention (a box covering pixel columns 3..7 has ``x0 = 3`` and ``x1 = 8``),
their scores and 1-based class ids.  Stitching (:mod:`minescan.scan.stitch`)
makes a :class:`SceneDetections` of them, the same value in scene pixels, and
georeferencing and the result writers build on that.

Pure values: nothing here imports onnx or onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

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


class SceneDetections(TileDetections):
    """Final detections in scene pixels (pixel-corner ``x0, y0, x1, y1``), sorted by score."""


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


@dataclass(frozen=True, eq=False)
class BatchDetections:
    """A model call's contract outputs for N tiles, padded to K per tile; tile i's valid entries are the first ``counts[i]``."""

    boxes: np.ndarray  # [N, K, 4] float32, normalized (ymin, xmin, ymax, xmax)
    scores: np.ndarray  # [N, K] float32
    classes: np.ndarray  # [N, K] int64, 1-based
    counts: np.ndarray  # [N] int64

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray]) -> BatchDetections:
        """The detections of one model call's contract outputs, by name (float classes and counts are rounded)."""
        return cls(
            boxes=np.asarray(outputs["detection_boxes"], np.float32),
            scores=np.asarray(outputs["detection_scores"], np.float32),
            classes=np.rint(outputs["detection_classes"]).astype(np.int64),
            counts=np.rint(outputs["num_detections"]).astype(np.int64),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[BatchDetections]) -> BatchDetections:
        """The detections of consecutive calls as one set (all parts must share K)."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "classes", "counts")))

    def __len__(self) -> int:
        return len(self.counts)

    def tile(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and classes of tile ``index``'s valid detections (normalized boxes)."""
        count = int(self.counts[index])
        return self.boxes[index, :count], self.scores[index, :count], self.classes[index, :count]

    def per_tile(self, height: int, width: int, score_threshold: float = 0.0) -> list[TileDetections]:
        """Each tile's detections in pixels of a ``height`` x ``width`` input (see :func:`from_normalized`)."""
        return [
            from_normalized(self.boxes[i], self.scores[i], self.classes[i], self.counts[i], height, width, score_threshold)
            for i in range(len(self))
        ]
