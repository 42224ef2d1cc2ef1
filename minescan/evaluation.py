"""Detections against known truth: matches, precision, recall, IoU.

A detection matches a truth object of the same class when their boxes have
IoU >= ``iou`` (0.5, the PASCAL/COCO convention); each truth object matches
at most one detection, greedily by score.  Extra detections of a matched
object count as duplicates (and as false positives).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """How detections compare with truth."""

    truth: int
    detections: int
    matched: int
    duplicates: int
    mean_iou: float
    min_iou: float

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 1.0

    def format(self) -> str:
        return (
            f"{self.matched}/{self.truth} objects found, {self.detections - self.matched} false positives "
            f"({self.duplicates} duplicates); precision {self.precision:.3f}, recall {self.recall:.3f}, "
            f"mean IoU {self.mean_iou:.3f}"
        )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` [M, 4] and ``b`` [N, 4] (x0, y0, x1, y1)."""
    a, b = a.reshape(-1, 4)[:, None, :], b.reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def compare(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    truth_boxes: np.ndarray,
    truth_classes: np.ndarray,
    iou: float = 0.5,
) -> Agreement:
    """Match detections to truth (see the module docstring)."""
    ious = iou_matrix(boxes, truth_boxes)
    ious[classes.reshape(-1, 1) != truth_classes.reshape(1, -1)] = 0.0
    taken = np.zeros(len(truth_boxes), bool)
    matched_ious: list[float] = []
    duplicates = 0
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if not len(truth_boxes):
            break
        j = int(np.argmax(ious[i]))
        if ious[i, j] < iou:
            continue
        if taken[j]:
            duplicates += 1
            continue
        taken[j] = True
        matched_ious.append(float(ious[i, j]))
    return Agreement(
        truth=len(truth_boxes),
        detections=len(boxes),
        matched=len(matched_ious),
        duplicates=duplicates,
        mean_iou=float(np.mean(matched_ious)) if matched_ious else 0.0,
        min_iou=float(np.min(matched_ious)) if matched_ious else 0.0,
    )
