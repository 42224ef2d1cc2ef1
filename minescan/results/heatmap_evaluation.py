"""A classifier's heatmap against truth objects: per-cell precision, recall, F1 and ROC AUC.

``minescan evaluate HEATMAP.tif TRUTH`` scores one band of a heatmap
(:mod:`minescan.results.heatmap`) against the boxes of a truth file.  One
figure per *cell* (a square of ``stride`` scene px, the map's resolution),
judged on the classifier's *window* centred on it: a cell's value is a blend
led by the windows centred near it, so it answers "does a window here show
mining", and a cell next to a site rightly scores high.  Truth comes only
from :func:`minescan.results.window_truth.window_labels`, the one rule that
also labels training windows, applied to that window: positive where a site
fills enough of it or it holds most of a site, negative where no site
touches it, ambiguous otherwise.  The window comes from the heatmap's tags
(``window``, ``stride``: what minescan wrote); a map without them is judged
per cell.  Measured on the demo (seed 101, window 64, stride 32): judged per
cell, the blend reaching into the neighbours of every site read as
precision 0.649, recall 0.996; judged per window, as the classifier was
trained, precision 0.930, recall 0.944 (F1 0.786 against 0.937).
Left out of every figure, and counted:

* **nodata** cells (NaN; 255 in the uint8 encoding): the scan saw no pixels
  there, so they are neither hits nor misses, never negatives;
* **ambiguous** cells (a sliver of a site at the cell's edge), among the rest.

Invariants: ``positive + negative + ambiguous + nodata`` is the number of
cells; a map whose cells at or above the threshold are exactly the positive
ones scores precision = recall = F1 = 1, and one whose every positive cell
outranks every negative one has ROC AUC 1.

Geometry: cells and truth boxes are compared in the cell grid's own units
(column, row; an affine image of the map coordinates, so shares and covers
are the ones in map coordinates).  Truth coordinates are snapped to 1/10000
of a cell first, so a box edge lying on a cell edge stays there after a trip
through WGS84 (a GeoJSON keeps 9 decimals of a degree, about 0.1 mm): a
truth file in EPSG:4326 scores as the same boxes in UTM.  The last row and
column of cells are whole squares, though the scene may end inside them.

Conventions as in :mod:`minescan.results.evaluation`: precision is 1 when no
cell reaches the threshold, recall 1 when no cell is positive; ROC AUC is the
Mann-Whitney rank statistic with tied probabilities sharing their mean rank
(so a map of ties scores 0.5), NaN when either class has no cell.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.results.window_truth import AMBIGUOUS, NEGATIVE, POSITIVE, window_labels

SNAP = 1e-4  # of a cell: truth coordinates are rounded to this (see the module docstring)


class HeatmapEvaluationError(MinescanError):
    """A heatmap that cannot be scored (not a heatmap, no such band, no CRS)."""


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive``; ties share their mean rank.

    NaN when either class is empty.
    """
    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Runs of equal scores: every member gets the mean of the 1-based ranks the run spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(ordered), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class HeatmapEvaluation:
    """One band of a heatmap scored per cell against truth (see the module docstring)."""

    label: str  # the class scored (the band's description)
    window_cells: float  # the square each cell is judged on, in cells (1: the cell itself)
    threshold: float  # cells at or above it count as found
    cells: int
    positive: int  # cells with data whose truth is positive
    negative: int
    ambiguous: int  # cells with data left out: a sliver of a site
    nodata: int  # cells without data left out, whatever their truth
    true_positives: int
    false_positives: int
    auc: float  # NaN when positive or negative is 0

    @property
    def false_negatives(self) -> int:
        return self.positive - self.true_positives

    @property
    def true_negatives(self) -> int:
        return self.negative - self.false_positives

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.positive if self.positive else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def format(self) -> str:
        """Three readable lines: the cells counted, the confusion counts, the scores."""
        auc = "n/a (one class has no cells)" if math.isnan(self.auc) else f"{self.auc:.3f}"
        return "\n".join([
            f"cells {self.cells}, each judged on {'itself' if self.window_cells == 1 else f'the {self.window_cells:g} x {self.window_cells:g}-cell window centred on it'}: "
            f"{self.positive} positive, {self.negative} negative scored; {self.ambiguous} ambiguous and {self.nodata} nodata left out",
            f"{self.label} at probability >= {self.threshold:g}: TP {self.true_positives}  FP {self.false_positives}  "
            f"FN {self.false_negatives}  TN {self.true_negatives}",
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  F1 {self.f1:.3f}  ROC AUC {auc}",
        ])


def cell_labels(shape: tuple[int, int], transform: Any, truth_boxes: np.ndarray, *, window_cells: float = 1.0,
                object_share: float = DEFAULTS.window_object_share, window_cover: float = DEFAULTS.window_cover) -> np.ndarray:
    """int8 [rows, cols]: each cell's truth (POSITIVE, NEGATIVE, AMBIGUOUS) from ``truth_boxes`` [K, 4] in map units,
    judged on a square of ``window_cells`` cells centred on the cell (1: the cell itself).

    ``transform`` is the cell grid's affine transform (cell corner -> map); a
    rotated grid is refused, since a box is axis-aligned in only one of the two.
    """
    if abs(transform.b) > 1e-12 * abs(transform.a) or abs(transform.d) > 1e-12 * abs(transform.e):
        raise HeatmapEvaluationError(f"the heatmap's grid is rotated (transform {tuple(transform)[:6]}); "
                                     "only north-up grids are scored")
    rows, cols = shape
    boxes = np.asarray(truth_boxes, np.float64).reshape(-1, 4)
    inverse = ~transform
    x0, y0 = inverse * (boxes[:, 0], boxes[:, 1])
    x1, y1 = inverse * (boxes[:, 2], boxes[:, 3])
    objects = np.round(np.column_stack([x0, y0, x1, y1]) / SNAP) * SNAP
    r, c = np.mgrid[0:rows, 0:cols]
    r, c = r.ravel().astype(np.float64), c.ravel().astype(np.float64)
    margin = (window_cells - 1) / 2
    cells = np.column_stack([c - margin, r - margin, c + 1 + margin, r + 1 + margin])
    return window_labels(cells, objects, object_share=object_share, window_cover=window_cover).reshape(rows, cols)


def evaluate_heatmap(probability: np.ndarray, transform: Any, truth_boxes: np.ndarray, *, threshold: float = 0.5,
                     label: str = "", window_cells: float = 1.0, object_share: float = DEFAULTS.window_object_share,
                     window_cover: float = DEFAULTS.window_cover) -> HeatmapEvaluation:
    """Score ``probability`` [rows, cols] (NaN = nodata) on the cell grid ``transform`` against ``truth_boxes`` [K, 4].

    ``truth_boxes`` are (xmin, ymin, xmax, ymax) in the heatmap's CRS; a cell
    counts as found when its probability is >= ``threshold``.
    """
    probability = np.asarray(probability, np.float64)
    if probability.ndim != 2:
        raise HeatmapEvaluationError(f"expected one band [rows, cols] of probabilities, got shape {probability.shape}")
    truth = cell_labels(probability.shape, transform, truth_boxes, window_cells=window_cells, object_share=object_share,
                        window_cover=window_cover)
    nodata = np.isnan(probability)
    positive, negative = (truth == POSITIVE) & ~nodata, (truth == NEGATIVE) & ~nodata
    scored = positive | negative
    found = np.zeros(probability.shape, bool)
    found[~nodata] = probability[~nodata] >= threshold
    return HeatmapEvaluation(
        label=label, window_cells=float(window_cells), threshold=float(threshold), cells=int(probability.size), positive=int(positive.sum()),
        negative=int(negative.sum()), ambiguous=int(((truth == AMBIGUOUS) & ~nodata).sum()), nodata=int(nodata.sum()),
        true_positives=int((found & positive).sum()), false_positives=int((found & negative).sum()),
        auc=roc_auc(probability[scored], positive[scored]),
    )


@dataclass(frozen=True)
class HeatmapBand:
    """One band of a heatmap file, decoded: probabilities [rows, cols] (NaN = nodata) and where the cells lie."""

    path: Path
    label: str
    band: int  # 1-based
    labels: tuple[str, ...]  # every band's name, in order
    probability: np.ndarray
    transform: Any
    crs: Any  # pyproj.CRS
    window_cells: float = 1.0  # the classifier's window in cells (tags window / stride; 1 without tags)

    @property
    def cell_size(self) -> float:
        return abs(self.transform.a)


def read_heatmap(path: str | os.PathLike[str], label: str | None = None) -> HeatmapBand:
    """The band named ``label`` (default: the last, a binary model's positive class) of the heatmap at ``path``
    (:func:`minescan.results.heatmap.read_heatmap`), checked to hold probabilities."""
    from minescan.results.heatmap import HeatmapReadError, read_heatmap as read_file

    try:
        heat = read_file(path)
        band = heat.band(label)
    except HeatmapReadError as exc:
        raise HeatmapEvaluationError(str(exc)) from None
    probability = heat.probabilities[band - 1].astype(np.float64)
    values = probability[~np.isnan(probability)]
    if values.size and (values.min() < 0 or values.max() > 1):
        raise HeatmapEvaluationError(f"{heat.path}: band {band} holds values in [{values.min():g}, {values.max():g}], "
                                     "not probabilities in [0, 1]")
    tags = heat.tags
    window_cells = tags["window"] / tags["stride"] if tags.get("window") and tags.get("stride") else 1.0
    return HeatmapBand(heat.path, heat.labels[band - 1], band, heat.labels, probability, heat.transform, heat.crs,
                       window_cells)


def select_classes(class_ids: np.ndarray, keep: Sequence[int] | None) -> np.ndarray:
    """Boolean mask of the truth objects whose class is in ``keep`` (all of them when ``keep`` is None)."""
    class_ids = np.asarray(class_ids)
    return np.ones(len(class_ids), bool) if keep is None else np.isin(class_ids, list(keep))
