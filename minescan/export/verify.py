"""Parity between two detection sets: does an exported model detect what its source does?

:func:`compare_detections` takes a reference and a candidate
:class:`~minescan.model.detections.BatchDetections` for the same tiles and pairs
them up: each reference detection at or above a score floor, highest score
first, takes the unused candidate detection of the same class whose box is
closest (largest coordinate difference, normalized units).  It is matched when
that difference is within the box tolerance.  The report gives the agreement
(matched / compared), the largest box and score differences of matched pairs
and how many reference detections only a candidate of another class was near.

:func:`verify_export` applies this to a SavedModel (reference, run by TF) and
its ONNX export (run by ONNX Runtime on CPU).  Comparing two ONNX files (FP32
against FP16 or INT8) is the same comparison on two
:func:`~minescan.export.detections.run_onnx` results with looser tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minescan.export.detections import open_session, run_onnx, run_saved_model, synthetic_tiles
from minescan.model.detections import BatchDetections

BOX_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-3
SCORE_FLOOR = 0.05
_DEFAULT_TILE_SIZE = (256, 256)


@dataclass(frozen=True)
class ParityReport:
    """How closely a candidate's detections follow a reference's on the same tiles."""

    tiles: int
    compared: int  # reference detections at or above score_floor
    matched: int  # of those, with a same-class candidate within box_tolerance
    class_mismatches: int  # unmatched, but a candidate of another class was within box_tolerance
    unmatched_candidates: int  # candidate detections at or above score_floor that no reference took
    max_box_diff: float  # over matched pairs, normalized units
    max_score_diff: float  # over matched pairs
    score_floor: float
    box_tolerance: float
    score_tolerance: float
    min_agreement: float

    @property
    def agreement(self) -> float:
        """Fraction of compared reference detections that were matched (0 when none were compared)."""
        return self.matched / self.compared if self.compared else 0.0

    @property
    def passed(self) -> bool:
        """Something was compared, enough of it matched, and matched scores agree within tolerance."""
        return (
            self.compared > 0
            and self.agreement >= self.min_agreement
            and self.max_score_diff <= self.score_tolerance
        )

    def format(self) -> str:
        """A few readable lines, the verdict first."""
        verdict = "PASS" if self.passed else "FAIL"
        return "\n".join(
            [
                f"parity {verdict}: {self.matched}/{self.compared} detections matched "
                f"({self.agreement:.1%}, need {self.min_agreement:.1%}) on {self.tiles} tiles, score >= {self.score_floor:g}",
                f"max box diff {self.max_box_diff:.3g} (tolerance {self.box_tolerance:g}), "
                f"max score diff {self.max_score_diff:.3g} (tolerance {self.score_tolerance:g})",
                f"class mismatches {self.class_mismatches}, candidate-only detections {self.unmatched_candidates}",
            ]
        )


def compare_detections(
    reference: BatchDetections,
    candidate: BatchDetections,
    *,
    score_floor: float = SCORE_FLOOR,
    box_tolerance: float = BOX_TOLERANCE,
    score_tolerance: float = SCORE_TOLERANCE,
    min_agreement: float = 1.0,
) -> ParityReport:
    """Match ``candidate``'s detections to ``reference``'s, tile by tile (see the module docstring)."""
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} tiles, candidate {len(candidate)}")
    compared = matched = class_mismatches = unmatched_candidates = 0
    box_diffs, score_diffs = [0.0], [0.0]
    for index in range(len(reference)):
        ref_boxes, ref_scores, ref_classes = reference.tile(index)
        cand_boxes, cand_scores, cand_classes = candidate.tile(index)
        # distance[i, j]: largest coordinate difference between reference i and candidate j
        distance = np.abs(ref_boxes[:, np.newaxis, :] - cand_boxes[np.newaxis, :, :]).max(axis=2, initial=0.0)
        used = np.zeros(len(cand_boxes), bool)
        for i in np.argsort(-ref_scores, kind="stable"):
            if ref_scores[i] < score_floor:
                break
            compared += 1
            same_class = ~used & (cand_classes == ref_classes[i])
            close = distance[i] <= box_tolerance
            if not (same_class & close).any():
                class_mismatches += int((~used & close).any())
                continue
            j = int(np.argmin(np.where(same_class, distance[i], np.inf)))
            used[j] = True
            matched += 1
            box_diffs.append(float(distance[i, j]))
            score_diffs.append(abs(float(ref_scores[i]) - float(cand_scores[j])))
        unmatched_candidates += int((~used & (cand_scores >= score_floor)).sum())
    return ParityReport(
        tiles=len(reference),
        compared=compared,
        matched=matched,
        class_mismatches=class_mismatches,
        unmatched_candidates=unmatched_candidates,
        max_box_diff=max(box_diffs),
        max_score_diff=max(score_diffs),
        score_floor=score_floor,
        box_tolerance=box_tolerance,
        score_tolerance=score_tolerance,
        min_agreement=min_agreement,
    )


def verify_export(
    saved_model_dir: str | Path,
    onnx_path: str | Path,
    *,
    tiles: np.ndarray | None = None,
    tile_count: int = 4,
    seed: int = 0,
    score_floor: float = SCORE_FLOOR,
    box_tolerance: float = BOX_TOLERANCE,
    score_tolerance: float = SCORE_TOLERANCE,
) -> ParityReport:
    """Compare the SavedModel (TF) with its ONNX export (ONNX Runtime, CPU) on the same tiles.

    Without ``tiles``, ``tile_count`` synthetic tiles are drawn with ``seed``
    at the ONNX input's height and width (256x256 when it takes any size).
    """
    session = open_session(onnx_path)
    if tiles is None:
        height, width = session.get_inputs()[0].shape[1:3]
        fixed = isinstance(height, int) and isinstance(width, int)
        tiles = synthetic_tiles(tile_count, (height, width) if fixed else _DEFAULT_TILE_SIZE, seed)
    return compare_detections(
        run_saved_model(saved_model_dir, tiles),
        run_onnx(session, tiles),
        score_floor=score_floor,
        box_tolerance=box_tolerance,
        score_tolerance=score_tolerance,
    )
