"""Detections against known truth: matches, precision, recall, IoU, average precision.

A detection matches a truth object of the same class when their boxes have
IoU >= ``iou`` (0.5, the PASCAL/COCO convention); detections are taken
greedily by score, each takes the truth object it overlaps most, and each
truth object matches at most one detection.  Extra detections of a matched
object count as duplicates (and as false positives).

:func:`compare` sums this up over all classes (the demo's one-line verdict).
:func:`evaluate` scores each class as object detection benchmarks do:
precision and recall of the detections scoring at least a threshold, and the
average precision (AP) over all detections, whatever their score.  AP is the
area under the precision-recall curve traced by lowering the score threshold
one detection at a time, with **all-point interpolation** (PASCAL VOC 2010
and later): precision at recall r is the best precision at any recall >= r,
integrated over every recall step.  COCO's AP@[.5] is the same curve sampled
at 101 recall points, so the two agree to within about 0.01.  mAP is the mean
AP over the classes that have truth objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from minescan.defaults import DEFAULTS


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


@dataclass(frozen=True)
class Matches:
    """Per detection (input order): the matched truth index (-1: none), its IoU, and whether it is a duplicate."""

    truth_index: np.ndarray
    iou: np.ndarray
    duplicate: np.ndarray


def match(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    truth_boxes: np.ndarray,
    truth_classes: np.ndarray,
    iou: float = DEFAULTS.match_iou,
) -> Matches:
    """Match detections to truth of the same class, greedily by score (see the module docstring)."""
    ious = iou_matrix(boxes, truth_boxes)
    ious[np.asarray(classes).reshape(-1, 1) != np.asarray(truth_classes).reshape(1, -1)] = 0.0
    truth_index = np.full(len(ious), -1)
    best = np.zeros(len(ious))
    duplicate = np.zeros(len(ious), bool)
    taken = np.zeros(ious.shape[1], bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if not ious.shape[1]:
            break
        j = int(np.argmax(ious[i]))
        if ious[i, j] < iou:
            continue
        if taken[j]:
            duplicate[i] = True
            continue
        taken[j] = True
        truth_index[i], best[i] = j, ious[i, j]
    return Matches(truth_index, best, duplicate)


def compare(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    truth_boxes: np.ndarray,
    truth_classes: np.ndarray,
    iou: float = DEFAULTS.match_iou,
) -> Agreement:
    """Match detections to truth (see the module docstring) and sum up over all classes."""
    found = match(boxes, scores, classes, truth_boxes, truth_classes, iou)
    matched_ious = found.iou[found.truth_index >= 0]
    return Agreement(
        truth=len(truth_boxes),
        detections=len(boxes),
        matched=len(matched_ious),
        duplicates=int(found.duplicate.sum()),
        mean_iou=float(np.mean(matched_ious)) if len(matched_ious) else 0.0,
        min_iou=float(np.min(matched_ious)) if len(matched_ious) else 0.0,
    )


def average_precision(scores: np.ndarray, true_positive: np.ndarray, truth: int) -> float:
    """All-point interpolated AP of detections with ``scores`` and ``true_positive`` flags against ``truth`` objects.

    NaN when there is no truth (AP is undefined); 0 when there are no detections.
    """
    if truth == 0:
        return float("nan")
    hits = np.asarray(true_positive, bool)[np.argsort(-np.asarray(scores), kind="stable")]
    if not len(hits):
        return 0.0
    tp = np.cumsum(hits)
    recall = np.concatenate([[0.0], tp / truth])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(hits) + 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at any recall >= r
    return float(np.sum((recall[1:] - recall[:-1]) * envelope[1:]))


@dataclass(frozen=True)
class ClassScore:
    """One class: counts and precision/recall at the score threshold, AP over all detections."""

    class_id: int
    label: str
    truth: int
    detections: int  # scoring >= the threshold
    true_positives: int
    average_precision: float  # NaN without truth

    @property
    def false_positives(self) -> int:
        return self.detections - self.true_positives

    @property
    def false_negatives(self) -> int:
        return self.truth - self.true_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.truth if self.truth else 1.0


@dataclass(frozen=True)
class Evaluation:
    """Per-class scores of detections against truth at one IoU and score threshold."""

    classes: tuple[ClassScore, ...]
    iou: float
    score_threshold: float

    @property
    def mean_average_precision(self) -> float:
        """Mean AP over classes with truth (NaN when no class has any)."""
        values = [c.average_precision for c in self.classes if c.truth]
        return float(np.mean(values)) if values else float("nan")

    def format(self) -> str:
        """A table, one row per class, and the mAP."""
        width = max([len("class"), *(len(c.label) for c in self.classes)])
        lines = [f"{'class':<{width}}  truth  detections    TP    FP    FN  precision  recall  AP@{self.iou:g}"]
        for c in self.classes:
            ap = "n/a" if np.isnan(c.average_precision) else f"{c.average_precision:.3f}"
            lines.append(
                f"{c.label:<{width}}  {c.truth:>5}  {c.detections:>10}  {c.true_positives:>4}  {c.false_positives:>4}  "
                f"{c.false_negatives:>4}  {c.precision:>9.3f}  {c.recall:>6.3f}  {ap:>6}"
            )
        lines.append(f"mAP@{self.iou:g} {self.mean_average_precision:.3f} (all-point interpolated AP, over classes with truth)")
        return "\n".join(lines)


def evaluate(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    truth_boxes: np.ndarray,
    truth_classes: np.ndarray,
    *,
    iou: float = DEFAULTS.match_iou,
    score_threshold: float = DEFAULTS.score_threshold,
    labels: Mapping[int, str] | None = None,
) -> Evaluation:
    """Score each class present in the detections or the truth (see the module docstring).

    Matching uses every detection, so a low-scoring duplicate never takes an
    object from a better one; ``score_threshold`` only selects the detections
    counted for precision and recall.
    """
    scores, classes, truth_classes = np.asarray(scores, np.float64), np.asarray(classes), np.asarray(truth_classes)
    found = match(boxes, scores, classes, truth_boxes, truth_classes, iou)
    hit = found.truth_index >= 0
    kept = scores >= score_threshold
    results = []
    for class_id in sorted({int(c) for c in classes} | {int(c) for c in truth_classes}):
        mine = classes == class_id
        truth = int(np.sum(truth_classes == class_id))
        results.append(
            ClassScore(
                class_id=class_id,
                label=(labels or {}).get(class_id, str(class_id)),
                truth=truth,
                detections=int(np.sum(mine & kept)),
                true_positives=int(np.sum(mine & kept & hit)),
                average_precision=average_precision(scores[mine], hit[mine], truth),
            )
        )
    return Evaluation(tuple(results), iou, score_threshold)
