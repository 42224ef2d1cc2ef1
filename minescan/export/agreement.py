"""A reduced-precision model against its FP32 original: do they detect the same, and how much faster is it?

:func:`compare_precision` runs both ONNX models with ONNX Runtime on CPU on the
same tiles and matches the candidate's detections to the FP32 ones
(:func:`~minescan.export.verify.compare_detections`) with tolerances loose
enough for FP16/INT8 rounding: the agreement is the recall of the FP32
detections a scan would report, those at or above the scan's score threshold
(0.5 by default).  Candidates are matched whatever their score, so an FP32
detection at 0.52 whose INT8 twin scored 0.49 still counts as reproduced, and
the score drift reports the difference; a detection tied (within the score
tolerance) with the candidate's max_detections cutoff and swapped there for
another tied one counts as reproduced, a tie swap
(:mod:`minescan.export.verify`).  The floor is the operating point
rather than the 0.05 of TF/ONNX parity because low-score proposals of a
trained detector reorder under any rounding: a recall over them measures
noise, not what a user gets.  It then times one tile through each model,
alternating, in the same process, and reports the median ratio.

A tile classifier has no detections to match: :func:`compare_classifier_precision`
compares its probabilities per window with the FP32 model's
(:func:`~minescan.export.verify.compare_probabilities`) under the gate below,
timed the same way.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from minescan.model.contract import INPUT_NAME
from minescan.export.detections import open_session, run_onnx
from minescan.export.verify import ParityReport, ProbabilityReport, compare_detections, compare_probabilities, run_classifier

BOX_TOLERANCE = 0.02  # normalized: 5 px on a 256 px tile, 13 px on 640
SCORE_TOLERANCE = 0.1
MIN_RECALL: Mapping[str, float] = {"fp16": 0.95, "int8": 0.8}
OPERATING_THRESHOLD = 0.5  # the scan's default --score-threshold
# Classifier gate (FP16/INT8 against FP32 on the same windows).  A heatmap blends window probabilities and its
# regions are thresholded, so what matters is the decision per window and how far probabilities move on the
# whole: at least 98% of windows keep their top class (for one sigmoid output: p >= 0.5), the mean
# probability moves by at most 0.02, and no single one by half the range.  A max-only gate of 0.1 (the
# detector's score drift) refused the demo classifier's INT8 over one borderline window of 40 (drift 0.096
# to 0.33 by calibration) while it kept F1 within 0.001 of FP32 on fresh scenes.
CLASSIFIER_MIN_AGREEMENT = 0.98
CLASSIFIER_MAX_DIFF = 0.5
CLASSIFIER_MEAN_DIFF = 0.02


@dataclass(frozen=True)
class PrecisionReport:
    """FP16/INT8 detections against FP32 on the same tiles, and the CPU speed ratio."""

    precision: str
    parity: ParityReport
    fp32_seconds: float  # median per tile, batch 1
    candidate_seconds: float

    @property
    def recall(self) -> float:
        """Fraction of FP32 detections at or above the floor that the candidate reproduces (tie swaps
        included: tied with the candidate's cutoff, see :mod:`minescan.export.verify`)."""
        return self.parity.agreement

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.candidate_seconds

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def format(self) -> str:
        """A few readable lines, the verdict first."""
        p = self.parity
        verdict = "PASS" if self.passed else "FAIL"
        return "\n".join(
            [
                f"{self.precision} vs fp32 {verdict}: recall {self.recall:.1%} ({p.agreeing}/{p.compared} FP32 detections "
                f"with score >= {p.score_floor:g} on {p.tiles} tiles; need {p.min_agreement:.0%}), "
                f"{p.unmatched_candidates} {self.precision}-only"
                + (f", {p.tie_swaps} tie swap(s) at the max_detections cutoff counted as reproduced" if p.tie_swaps else ""),
                f"matched boxes within {p.max_box_diff:.3g} (tolerance {p.box_tolerance:g}), "
                f"max score drift {p.max_score_diff:.3g} (tolerance {p.score_tolerance:g})",
                f"ONNX Runtime CPU, batch 1, median: fp32 {self.fp32_seconds * 1e3:.1f} ms, "
                f"{self.precision} {self.candidate_seconds * 1e3:.1f} ms per tile ({self.speedup:.2f}x)",
            ]
        )


def compare_precision(
    fp32_model: str | Path | bytes,
    candidate_model: str | Path | bytes,
    precision: str,
    tiles: np.ndarray,
    *,
    score_floor: float = OPERATING_THRESHOLD,
    repeats: int = 5,
) -> PrecisionReport:
    """Compare ``candidate_model`` (FP16 or INT8) with ``fp32_model`` on ``tiles`` (see the module docstring)."""
    reference, candidate = open_session(fp32_model), open_session(candidate_model)
    parity = compare_detections(
        run_onnx(reference, tiles),
        run_onnx(candidate, tiles),
        score_floor=score_floor,
        box_tolerance=BOX_TOLERANCE,
        score_tolerance=SCORE_TOLERANCE,
        min_agreement=MIN_RECALL[precision],
    )
    feed = {INPUT_NAME: tiles[:1]}
    timings: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for index, session in enumerate((reference, candidate)):
            started = time.perf_counter()
            session.run(None, feed)
            timings[index].append(time.perf_counter() - started)
    return PrecisionReport(precision, parity, statistics.median(timings[0]), statistics.median(timings[1]))


@dataclass(frozen=True)
class ClassifierPrecisionReport:
    """FP16/INT8 class probabilities against FP32 on the same windows, and the CPU speed ratio."""

    precision: str
    parity: ProbabilityReport
    fp32_seconds: float  # median per window, batch 1
    candidate_seconds: float

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.candidate_seconds

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def format(self) -> str:
        """Two readable lines, the verdict first."""
        return "\n".join([
            f"{self.precision} vs fp32 {self.parity.format()}",
            f"ONNX Runtime CPU, batch 1, median: fp32 {self.fp32_seconds * 1e3:.2f} ms, "
            f"{self.precision} {self.candidate_seconds * 1e3:.2f} ms per window ({self.speedup:.2f}x)",
        ])


def compare_classifier_precision(
    fp32_model: str | Path | bytes, candidate_model: str | Path | bytes, precision: str, tiles: np.ndarray, *, repeats: int = 5
) -> ClassifierPrecisionReport:
    """Compare a classifier's ``candidate_model`` (FP16 or INT8) with ``fp32_model`` on the windows ``tiles``."""
    reference, candidate = open_session(fp32_model), open_session(candidate_model)
    parity = compare_probabilities(run_classifier(reference, tiles), run_classifier(candidate, tiles),
                                   tolerance=CLASSIFIER_MAX_DIFF, min_agreement=CLASSIFIER_MIN_AGREEMENT,
                                   mean_tolerance=CLASSIFIER_MEAN_DIFF)
    fp32_seconds, candidate_seconds = _median_times(reference, candidate, tiles[:1], repeats)
    return ClassifierPrecisionReport(precision, parity, fp32_seconds, candidate_seconds)


def _median_times(reference, candidate, tile: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds of one call of each session on ``tile``, alternating."""
    feed = {INPUT_NAME: tile}
    timings: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for index, session in enumerate((reference, candidate)):
            started = time.perf_counter()
            session.run(None, feed)
            timings[index].append(time.perf_counter() - started)
    return statistics.median(timings[0]), statistics.median(timings[1])
