"""Parity between two detection sets: does an exported model detect what its source does?

:func:`compare_detections` takes a reference and a candidate
:class:`~minescan.model.detections.BatchDetections` for the same tiles and pairs
them up: each reference detection at or above a score floor, highest score
first, takes the unused candidate detection of the same class whose box is
closest (largest coordinate difference, normalized units).  It is matched when
that difference is within the box tolerance.  The report gives the agreement
((matched + tie swaps, below) / compared), the largest box and score
differences of matched pairs and how many reference detections only a
candidate of another class was near.

Ties.  Two detections whose scores differ by at most the score tolerance tie:
which of them ranks first is float noise.  Rank alone never matters here (a
reference detection takes its candidate by class and box, not by position), but
a model that keeps only its top ``max_detections`` lets that noise decide which
of the detections tied at its cutoff survive.  So a reference detection left
unmatched by the pass above is a *tie swap*, not a disagreement, when all of:

1. the candidate's tile is full (it holds as many detections as it is padded
   to: ``max_detections`` truncated it);
2. its score ties with the candidate's cutoff, the lowest score it kept; and
3. a candidate detection that no reference detection took ties with it (the
   one kept in its place), which it is then paired with, one for one.

The two of a swap are different detections, so their box, class and score
differences say nothing and are left out of the maxima; the agreement counts
tie swaps as matched, and the swapped-in candidate is not candidate-only.
Anywhere else a missing detection is a disagreement, ties or not: a detection
whose score ties with nothing at the cutoff, found under another class, is a
class mismatch; a tied detection whose box moved beyond the tolerance is
unmatched, whoever it ties with.  The rule sees a cutoff only where a tile is
full: a model's score threshold or per-class limit is not visible in its
outputs.  At a cutoff the dropped detection has nothing to be compared with, so
there a swapped-in detection and a moved one look alike.

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
    class_mismatches: int  # unmatched, no tie swap, and an untaken candidate of another class was within box_tolerance
    unmatched_candidates: int  # candidate detections at or above score_floor that no reference took (nor a tie swap)
    max_box_diff: float  # over matched pairs, normalized units
    max_score_diff: float  # over matched pairs
    score_floor: float
    box_tolerance: float
    score_tolerance: float
    min_agreement: float
    tie_swaps: int = 0  # unmatched, but swapped at the candidate's cutoff for a tied detection (module docstring)

    @property
    def agreeing(self) -> int:
        """Compared reference detections the candidate accounts for: matched plus tie swaps (<= compared)."""
        return self.matched + self.tie_swaps

    @property
    def agreement(self) -> float:
        """Fraction of compared reference detections matched or tie-swapped (0 when none were compared)."""
        return self.agreeing / self.compared if self.compared else 0.0

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
                f"parity {verdict}: {self.agreeing}/{self.compared} detections matched "
                f"({self.agreement:.1%}, need {self.min_agreement:.1%}) on {self.tiles} tiles, score >= {self.score_floor:g}",
                f"max box diff {self.max_box_diff:.3g} (tolerance {self.box_tolerance:g}), "
                f"max score diff {self.max_score_diff:.3g} (tolerance {self.score_tolerance:g})",
                f"tie swaps {self.tie_swaps} (tied at the candidate's max_detections cutoff, counted as matched), "
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
    capacity = candidate.scores.shape[1]  # K: a tile holding K detections was truncated at K
    tiles = [
        _match_tile(reference.tile(index), candidate.tile(index), capacity, score_floor, box_tolerance, score_tolerance)
        for index in range(len(reference))
    ]
    return ParityReport(
        tiles=len(reference),
        compared=sum(t.compared for t in tiles),
        matched=sum(t.matched for t in tiles),
        class_mismatches=sum(t.class_mismatches for t in tiles),
        unmatched_candidates=sum(t.unmatched_candidates for t in tiles),
        max_box_diff=max((t.max_box_diff for t in tiles), default=0.0),
        max_score_diff=max((t.max_score_diff for t in tiles), default=0.0),
        score_floor=score_floor,
        box_tolerance=box_tolerance,
        score_tolerance=score_tolerance,
        min_agreement=min_agreement,
        tie_swaps=sum(t.tie_swaps for t in tiles),
    )


@dataclass(frozen=True)
class _TileMatch:
    """One tile's share of a :class:`ParityReport`; matched + tie_swaps + unmatched ones = compared."""

    compared: int
    matched: int
    tie_swaps: int
    class_mismatches: int
    unmatched_candidates: int
    max_box_diff: float
    max_score_diff: float


def _match_tile(reference: tuple[np.ndarray, np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray, np.ndarray],
                capacity: int, score_floor: float, box_tolerance: float, score_tolerance: float) -> _TileMatch:
    """Greedy same-class matching, then tie swaps at the candidate's cutoff (see the module docstring).

    ``reference`` and ``candidate`` are one tile's (boxes, scores, classes); ``capacity`` is the
    length the candidate is padded to, so a tile holding that many was truncated there.
    """
    ref_boxes, ref_scores, ref_classes = reference
    cand_boxes, cand_scores, cand_classes = candidate
    ref_scores, cand_scores = np.asarray(ref_scores, np.float64), np.asarray(cand_scores, np.float64)
    # distance[i, j]: largest coordinate difference between reference i and candidate j
    distance = np.abs(ref_boxes[:, np.newaxis, :] - cand_boxes[np.newaxis, :, :]).max(axis=2, initial=0.0)
    used = np.zeros(len(cand_boxes), bool)
    compared = [i for i in np.argsort(-ref_scores, kind="stable") if ref_scores[i] >= score_floor]
    box_diffs, score_diffs, unmatched = [0.0], [0.0], []
    for i in compared:
        same_class = ~used & (cand_classes == ref_classes[i]) & (distance[i] <= box_tolerance)
        if not same_class.any():
            unmatched.append(i)
            continue
        j = int(np.argmin(np.where(same_class, distance[i], np.inf)))
        used[j] = True
        box_diffs.append(float(distance[i, j]))
        score_diffs.append(abs(ref_scores[i] - cand_scores[j]))
    full = 0 < len(cand_scores) == capacity
    cutoff = cand_scores.min() if full else np.nan
    tie_swaps = class_mismatches = 0
    for i in unmatched:
        gap = np.abs(cand_scores - ref_scores[i])
        tied = ~used & (gap <= score_tolerance)
        if full and abs(ref_scores[i] - cutoff) <= score_tolerance and tied.any():
            used[int(np.argmin(np.where(tied, gap, np.inf)))] = True
            tie_swaps += 1
        else:
            class_mismatches += int((~used & (distance[i] <= box_tolerance)).any())
    return _TileMatch(
        compared=len(compared),
        matched=len(compared) - len(unmatched),
        tie_swaps=tie_swaps,
        class_mismatches=class_mismatches,
        unmatched_candidates=int((~used & (cand_scores >= score_floor)).sum()),
        max_box_diff=max(box_diffs),
        max_score_diff=float(max(score_diffs)),
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
