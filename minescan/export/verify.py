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

Tile classifiers answer class probabilities [N, C] per window instead:
:func:`compare_probabilities` reports the largest probability difference and
how many windows keep their decision (the top class; for a one-output sigmoid
model, p >= 0.5), and :func:`run_classifier` runs an ONNX classifier on windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from minescan.export.detections import CPU, open_session, run_onnx, run_saved_model, synthetic_tiles
from minescan.model.contract import INPUT_NAME
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


PROBABILITY_TOLERANCE = 1e-4  # TF against ONNX Runtime, FP32 both: rounding only
SIGMOID_THRESHOLD = 0.5  # a one-output (sigmoid) classifier's decision


@dataclass(frozen=True)
class ProbabilityReport:
    """How closely a candidate classifier's probabilities follow a reference's on the same windows."""

    windows: int
    classes: int
    max_diff: float  # largest |probability difference| over every window and class
    agreeing: int  # windows with the same decision (top class; p >= 0.5 for one sigmoid output)
    tolerance: float
    min_agreement: float
    mean_diff: float = 0.0  # mean |probability difference| over windows and classes
    mean_tolerance: float = float("inf")

    @property
    def agreement(self) -> float:
        """Fraction of windows whose decision the candidate keeps (0 when none were compared)."""
        return self.agreeing / self.windows if self.windows else 0.0

    @property
    def passed(self) -> bool:
        """Something was compared, the probabilities agree within tolerance and enough decisions are kept."""
        return (self.windows > 0 and self.max_diff <= self.tolerance and self.mean_diff <= self.mean_tolerance
                and self.agreement >= self.min_agreement)

    def format(self) -> str:
        """One readable line, the verdict first."""
        decision = "top class" if self.classes > 1 else f"decision at p >= {SIGMOID_THRESHOLD:g}"
        mean = "" if self.mean_tolerance == float("inf") else f", mean {self.mean_diff:.3g} (tolerance {self.mean_tolerance:g})"
        return (f"{'PASS' if self.passed else 'FAIL'}: max probability diff {self.max_diff:.3g} (tolerance "
                f"{self.tolerance:g}){mean}, same {decision} on {self.agreeing}/{self.windows} windows "
                f"({self.agreement:.1%}, need {self.min_agreement:.0%}), {self.classes} class(es)")


def compare_probabilities(
    reference: np.ndarray, candidate: np.ndarray, *, tolerance: float = PROBABILITY_TOLERANCE, min_agreement: float = 1.0,
    mean_tolerance: float = float("inf"),
) -> ProbabilityReport:
    """Compare two classifiers' probabilities [N, C] for the same windows (a pure function of the arrays)."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"expected two [windows, classes] arrays of one shape, got {list(reference.shape)} and {list(candidate.shape)}")
    return ProbabilityReport(
        windows=len(reference),
        classes=reference.shape[1],
        max_diff=float(np.abs(reference - candidate).max(initial=0.0)),
        agreeing=int((_decisions(reference) == _decisions(candidate)).sum()),
        tolerance=tolerance,
        min_agreement=min_agreement,
        mean_diff=float(np.abs(reference - candidate).mean()) if reference.size else 0.0,
        mean_tolerance=mean_tolerance,
    )


def _decisions(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.shape[1] == 1:
        return probabilities[:, 0] >= SIGMOID_THRESHOLD
    return probabilities.argmax(axis=1)


def run_classifier(
    model: str | Path | bytes | ort.InferenceSession, tiles: np.ndarray, *, batch_size: int = 8, providers: Sequence[str] = CPU
) -> np.ndarray:
    """An ONNX classifier's probabilities [N, C] (float32) on uint8 windows [N, H, W, 3]; ``model`` a path,
    serialized bytes or an open session.  Its one output is read, whatever its name."""
    session = model if isinstance(model, ort.InferenceSession) else open_session(model, providers)
    output = session.get_outputs()[0].name
    parts = [session.run([output], {INPUT_NAME: tiles[start : start + batch_size]})[0]
             for start in range(0, len(tiles), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)
