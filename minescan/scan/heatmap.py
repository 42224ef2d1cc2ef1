"""Heatmaps from a tile classifier: windows every ``stride`` px, probabilities blended per output cell.

The concept first (as rasterio's ``windows.py`` puts it): a classifier answers
one probability per class for a *window* of ``window`` x ``window`` px; the map
it makes has one *cell* per ``stride`` x ``stride`` px of the scene
(``stride`` divides ``window``, default half of it).  Windows are the scan's
tiles (:mod:`minescan.raster.grid`, overlap ``window - stride``): every
``stride`` px, the last of a row or column shifted inward to end on the scene
edge.  A window contributes to the cells whose centres lie inside it.

Blending: a cell's value is the weighted mean of the windows covering it,
each window spreading its probability with a separable tent that is highest
at its centre and positive at its edge (:func:`tent`), so a cell
near a window border leans on the window that sees it centrally and neighbouring
windows meet without seams.  Invariants: a cell covered only by windows that
were entirely nodata, or whose own pixels are all nodata, is nodata (NaN),
never probability 0; a constant probability field blends to exactly that
constant; the result does not depend on the order windows arrive in.
Memory: two float arrays of the cell grid (a 10980 px scene at stride 64 is
172 x 172 cells), whatever the scene's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np


def foreground_classes(classes: int) -> list[int]:
    """The 1-based classes that are findings, by the classifier convention: a one-output (sigmoid) model's only
    class; of a softmax model, every class but class 1, its background ("other", "no mining").  Regions,
    quicklooks and scores default to these."""
    return [1] if classes == 1 else list(range(2, classes + 1))


class HeatmapError(ValueError):
    """A heatmap layout that cannot be made (stride not dividing the window, sizes out of range)."""


@dataclass(frozen=True)
class HeatmapLayout:
    """Windows and cells of one scene (see the module docstring)."""

    width: int
    height: int
    window: int
    stride: int

    def __post_init__(self) -> None:
        if min(self.width, self.height) < 1 or self.window < 1 or self.stride < 1:
            raise HeatmapError(f"scene {self.width}x{self.height}, window {self.window}, stride {self.stride}: all must be positive")
        if self.window % self.stride:
            raise HeatmapError(f"stride {self.stride} px must divide the window of {self.window} px")

    @classmethod
    def of(cls, width: int, height: int, window: int, stride: int | None = None) -> "HeatmapLayout":
        """The layout with ``stride`` (default: half the window, or the window when it is odd)."""
        return cls(width, height, window, stride or (window // 2 if window % 2 == 0 else window))

    @property
    def span(self) -> int:
        """Cells a window covers per side."""
        return self.window // self.stride

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the cell grid."""
        return math.ceil(self.height / self.stride), math.ceil(self.width / self.stride)

    @property
    def window_shape(self) -> tuple[int, int]:
        """(rows, cols) of windows: the scan's tile grid with overlap ``window - stride``."""
        return len(self._starts(self.height)), len(self._starts(self.width))

    def _starts(self, extent: int) -> list[int]:
        from minescan.raster.grid import axis_starts

        return axis_starts(extent, self.window, self.window - self.stride)

    def __len__(self) -> int:
        rows, cols = self.window_shape
        return rows * cols

    def windows(self) -> Iterator[tuple[int, int]]:
        """(col_off, row_off) of every window, row by row."""
        for row in self._starts(self.height):
            for col in self._starts(self.width):
                yield col, row


def tent(offsets: np.ndarray, half: float) -> np.ndarray:
    """Weights of cells ``offsets`` px from a window's centre: ``1 - |offset| / half`` (positive inside the window)."""
    return 1.0 - np.abs(offsets) / half


def window_weights(span: int) -> np.ndarray:
    """[span, span] weights of an aligned window's cells (the separable :func:`tent` in cell units)."""
    centre = (span - 1) / 2
    line = tent(np.arange(span) - centre, centre + 1)
    return np.outer(line, line)


class HeatmapAccumulator:
    """Blends window probabilities into the cell grid of ``layout`` for ``classes`` classes."""

    def __init__(self, layout: HeatmapLayout, classes: int) -> None:
        self.layout = layout
        rows, cols = layout.shape
        self._sums = np.zeros((classes, rows, cols), np.float64)
        self._weights = np.zeros((rows, cols), np.float64)

    def _axis(self, offset: int, cells: int, extent: int) -> tuple[int, int, np.ndarray]:
        """The cells (first, stop) whose centres lie in a window at ``offset`` along an axis, and their tent weights.

        A cell's centre is that of its part inside the scene (the last cell of a row may be cut by the edge).
        """
        stride, window = self.layout.stride, self.layout.window
        candidates = np.arange(max(0, offset // stride - 1), min(cells, (offset + window) // stride + 2))
        centres = (candidates * stride + np.minimum((candidates + 1) * stride, extent)) / 2
        inside = candidates[(centres >= offset) & (centres < offset + window)]
        if not len(inside):
            return 0, 0, np.zeros(0)
        centres = (inside * stride + np.minimum((inside + 1) * stride, extent)) / 2
        return int(inside[0]), int(inside[-1]) + 1, tent(centres - (offset + window / 2), window / 2 + stride / 2)

    def add(self, col_off: int, row_off: int, probabilities: np.ndarray, nodata: np.ndarray | None = None) -> None:
        """A window's class ``probabilities`` [C]; ``nodata`` [window, window] (True = nodata) leaves its cells without data out."""
        rows, cols = self.layout.shape
        r0, r1, wy = self._axis(row_off, rows, self.layout.height)
        c0, c1, wx = self._axis(col_off, cols, self.layout.width)
        if r1 <= r0 or c1 <= c0:
            return
        weights = np.outer(wy, wx)
        if nodata is not None:
            stride = self.layout.stride
            for a, r in enumerate(range(r0, r1)):  # a cell counts if any of its pixels in the window holds data
                y0, y1 = max(0, r * stride - row_off), max(0, (r + 1) * stride - row_off)
                for b, c in enumerate(range(c0, c1)):
                    x0, x1 = max(0, c * stride - col_off), max(0, (c + 1) * stride - col_off)
                    if nodata[y0:y1, x0:x1].all():
                        weights[a, b] = 0.0
        self._weights[r0:r1, c0:c1] += weights
        self._sums[:, r0:r1, c0:c1] += np.asarray(probabilities, np.float64)[:, None, None] * weights

    def result(self, nodata_cells: np.ndarray | None = None) -> np.ndarray:
        """Probabilities float32 [C, rows, cols]; NaN where no window with data reached a cell (or ``nodata_cells`` says so)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = self._sums / self._weights
        empty = self._weights <= 0
        if nodata_cells is not None:
            empty = empty | nodata_cells
        blended[:, empty] = np.nan
        return blended.astype(np.float32)


class HeatmapConsumer:
    """The stream's consumer for a classifier: each tile's probabilities into a :class:`HeatmapAccumulator`.

    Takes each tile's nodata mask first (``add_nodata``, called by the stream),
    so cells without data stay nodata.
    """

    def __init__(self, layout: HeatmapLayout, classes: int) -> None:
        self.layout = layout
        self._heat = HeatmapAccumulator(layout, classes)
        self._nodata: np.ndarray | None = None

    def add_nodata(self, tile: object, nodata: np.ndarray) -> None:
        self._nodata = nodata

    def add(self, tile: object, probabilities: np.ndarray) -> None:
        window = self.layout.window
        nodata = None if self._nodata is None else self._nodata[:window, :window]
        self._heat.add(tile.col_off, tile.row_off, probabilities, nodata)  # type: ignore[attr-defined]
        self._nodata = None

    def row_done(self, row: object) -> None:
        pass

    def finish(self) -> np.ndarray:
        return self._heat.result()
