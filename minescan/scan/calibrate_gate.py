"""Calibrating the classifier gate: the detector's recall and the tiles skipped at each candidate threshold.

Each labelled scene is scanned once, ungated, while the gate scores every tile
(:class:`~minescan.scan.gate.Gate` with ``record``) and the detector's output
of every tile is kept.  The gated scan at a threshold ``T`` is then replayed
exactly: the tiles scoring below ``T`` are left out, as the gate would leave
them out, and the rest are stitched again (a gated tile only removes its
detections: the stream never changes another tile's).  So one detector pass
per scene prices every threshold, and the recall reported for ``T`` is the
recall a ``minescan scan --gate ... --gate-threshold T`` of those scenes gets.

Recall is counted over every truth object of every scene (matching by
:func:`minescan.results.evaluation.evaluate` at the scan's score threshold,
IoU :attr:`~minescan.defaults.Defaults.match_iou`, in the scene's CRS); the
skip rate is the share of the scenes' tiles the gate keeps from the detector.
The target is met on the recall the gate *keeps*: recall at ``T`` over the
ungated detector's recall (threshold 0), so a detector that misses 5% of the
truth by itself can still be gated at "0.99" (losing at most 1% of what it
finds); the absolute recall is printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from minescan.errors import MinescanError
from minescan.model.detections import SceneDetections, TileDetections
from minescan.raster.grid import Tile
from minescan.raster.strips import RowEnd
from minescan.scan.gate import Gate
from minescan.scan.stitch import Stitcher
from minescan.scan.stream import run_stream

# Candidate thresholds when the caller names none: dense near 0, where one bright window decides.
CANDIDATES = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class CalibrationError(MinescanError):
    """Labelled scenes that cannot calibrate a gate (no truth objects, a scanner without a gate)."""


@dataclass(frozen=True)
class GatePoint:
    """One candidate threshold: recall over all truth objects, and the tiles it keeps from the detector."""

    threshold: float
    found: int  # truth objects matched
    truth: int
    gated: int
    tiles: int
    ungated_found: int = 0  # truth objects the ungated detector matched (threshold 0)

    @property
    def recall(self) -> float:
        return self.found / self.truth if self.truth else 1.0

    @property
    def kept(self) -> float:
        """Recall kept: this threshold's matches over the ungated detector's (1.0 when that found nothing)."""
        return self.found / self.ungated_found if self.ungated_found else 1.0

    @property
    def skipped(self) -> float:
        """Share of the scenes' tiles gated off."""
        return self.gated / self.tiles if self.tiles else 0.0


@dataclass(frozen=True)
class Calibration:
    """Every candidate's :class:`GatePoint`, lowest threshold first, and the target recall."""

    points: tuple[GatePoint, ...]
    target: float

    @property
    def choice(self) -> GatePoint | None:
        """The highest threshold that keeps the target share of the ungated recall (None if none does)."""
        ok = [p for p in self.points if p.kept >= self.target]
        return ok[-1] if ok else None

    def format(self) -> str:
        lines = ["threshold  recall  kept of ungated  found/truth  tiles gated off"]
        for p in self.points:
            mark = "  <- highest keeping the target" if p is self.choice else ""
            lines.append(f"{p.threshold:>9g}  {p.recall:>6.3f}  {p.kept:>15.1%}  {p.found:>5}/{p.truth:<5}  "
                         f"{p.gated:>5}/{p.tiles} ({p.skipped:.1%}){mark}")
        return "\n".join(lines)


class _Recorder:
    """A stream consumer that keeps every tile's detections and every row end, in order, for replays."""

    def __init__(self) -> None:
        self.events: list[tuple[Tile, TileDetections] | RowEnd] = []

    def add(self, tile: Tile, detections: TileDetections) -> None:
        self.events.append((tile, detections))

    def row_done(self, row: RowEnd) -> None:
        self.events.append(row)

    def finish(self) -> list:
        return self.events


def replay(events: list, scores: dict[tuple[int, int], float], threshold: float, stitch: Any) -> SceneDetections:
    """The scene's detections had the gate kept tiles scoring below ``threshold`` from the detector."""
    stitcher = Stitcher(stitch)
    for event in events:
        if isinstance(event, RowEnd):
            stitcher.row_done(event)
        elif scores[(event[0].row, event[0].col)] >= threshold:
            stitcher.add(*event)
    return stitcher.finish()


def calibrate(scanner: Any, pairs: Sequence[tuple[Any, Any]], target: float, *,
              thresholds: Sequence[float] = CANDIDATES, **options: Any) -> Calibration:
    """Price each of ``thresholds`` on the (scene, truth file) ``pairs`` with ``scanner`` (a Scanner with a gate)."""
    import shapely

    from minescan.defaults import DEFAULTS
    from minescan.results.evaluation import evaluate
    from minescan.results.georef import box_polygons
    from minescan.results.read import read_result_file

    if scanner.gate is None:
        raise CalibrationError("calibrating a gate needs a scanner with a gate")
    if not 0 < target <= 1:
        raise CalibrationError(f"recall target {target!r} is out of range: must be in (0, 1]")
    thresholds = sorted({float(t) for t in thresholds} | {0.0})  # 0 (ungated) is the reference
    found = np.zeros(len(thresholds), int)
    gated = np.zeros(len(thresholds), int)
    truth_total = tiles_total = 0
    for scene, truth_path in pairs:
        plan = scanner.plan(scene, **options)
        plan = replace(plan, gate=replace(plan.gate, threshold=0.0))
        gate = Gate(scanner.gate, plan.gate, record=True)
        events = run_stream(plan, scanner.detector, _Recorder(), gate=gate).result
        scores = gate.scores_by_tile or {}
        truth = read_result_file(truth_path, scores=False)
        truth_boxes = truth.boxes(plan.crs)
        truth_total += len(truth_boxes)
        tiles_total += plan.tiles
        for i, threshold in enumerate(thresholds):
            d = replay(events, scores, threshold, plan.stitch)
            boxes = shapely.bounds(box_polygons(d.boxes, plan.transform)).reshape(-1, 4) if len(d.boxes) else np.zeros((0, 4))
            scored = evaluate(boxes, d.scores, d.classes, truth_boxes, truth.class_ids, iou=DEFAULTS.match_iou,
                              score_threshold=plan.score_threshold)
            found[i] += sum(c.true_positives for c in scored.classes)
            gated[i] += sum(1 for s in scores.values() if s < threshold)
    if truth_total == 0:
        raise CalibrationError("the truth files hold no objects: recall cannot be measured")
    points = tuple(GatePoint(t, int(f), truth_total, int(g), tiles_total, int(found[0]))
                   for t, f, g in zip(thresholds, found, gated))
    return Calibration(points, target)
