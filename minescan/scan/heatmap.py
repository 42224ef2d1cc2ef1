"""Heatmaps from a tile classifier: windows every ``stride`` px, probabilities blended per output cell.

The concept first (as rasterio's ``windows.py`` puts it): a classifier answers
one probability per class for a *window* of ``window`` x ``window`` px; the map
it makes has one *cell* per ``stride`` x ``stride`` px of the scene
(``stride`` divides ``window``, default half of it).  Window ``(i, j)`` starts
at pixel ``(j * stride, i * stride)`` and covers ``window // stride`` cells a
side; windows are laid until they reach the scene's right and bottom edges
(the last ones may reach past them: the reader pads with nodata, as for tiles).

Blending: a cell's value is the weighted mean of the windows covering it,
each window spreading its probability with a separable tent that is highest
at its centre and positive at its edge (:func:`window_weights`), so a cell
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
        """(rows, cols) of windows: enough to reach the scene's bottom and right edges."""
        return tuple(max(1, math.ceil((size - self.window) / self.stride) + 1) for size in (self.height, self.width))  # type: ignore[return-value]

    def __len__(self) -> int:
        rows, cols = self.window_shape
        return rows * cols

    def windows(self) -> Iterator[tuple[int, int, int, int]]:
        """(i, j, col_off, row_off) of every window, row by row."""
        rows, cols = self.window_shape
        for i in range(rows):
            for j in range(cols):
                yield i, j, j * self.stride, i * self.stride


def window_weights(span: int) -> np.ndarray:
    """[span, span] weights of a window's cells: a separable tent, 1 at the centre, 1 / (span + 1) at the edge cells' centres."""
    centre = (span - 1) / 2
    tent = 1.0 - np.abs(np.arange(span) - centre) / (centre + 1)
    return np.outer(tent, tent)


class HeatmapAccumulator:
    """Blends window probabilities into the cell grid of ``layout`` for ``classes`` classes."""

    def __init__(self, layout: HeatmapLayout, classes: int) -> None:
        self.layout = layout
        rows, cols = layout.shape
        self._sums = np.zeros((classes, rows, cols), np.float64)
        self._weights = np.zeros((rows, cols), np.float64)
        self._kernel = window_weights(layout.span)

    def add(self, i: int, j: int, probabilities: np.ndarray, valid: np.ndarray | bool = True) -> None:
        """Window ``(i, j)``'s class ``probabilities`` [C]; ``valid`` [span, span] (or one bool): which of its cells hold data."""
        rows, cols = self.layout.shape
        span = self.layout.span
        r0, c0 = i, j  # window (i, j) starts at pixel (j, i) * stride: the corner of cell (i, j)
        r1, c1 = min(r0 + span, rows), min(c0 + span, cols)
        if r1 <= r0 or c1 <= c0:
            return
        weights = self._kernel[: r1 - r0, : c1 - c0]
        if not isinstance(valid, bool):
            weights = weights * np.asarray(valid, bool)[: r1 - r0, : c1 - c0]
        elif not valid:
            return
        self._weights[r0:r1, c0:c1] += weights
        self._sums[:, r0:r1, c0:c1] += np.asarray(probabilities, np.float64)[:, None, None] * weights

    def result(self, nodata_cells: np.ndarray | None = None) -> np.ndarray:
        """Probabilities float32 [C, rows, cols]; NaN where no valid window reached a cell or ``nodata_cells`` says so."""
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = self._sums / self._weights
        empty = self._weights <= 0
        if nodata_cells is not None:
            empty = empty | nodata_cells
        blended[:, empty] = np.nan
        return blended.astype(np.float32)
