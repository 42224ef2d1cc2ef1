"""What a scan saw: a coarse map of the scene's cells that held data, were nodata, or were never scanned.

The stream (:func:`~minescan.scan.stream.consume`) hands every non-empty tile's
nodata mask here as the tile is consumed, so the map costs no extra read: a
cell is *seen* when a scanned tile held data under its centre, *nodata* when no
tile did, and *not scanned* when the only tiles over it were kept from the
detector (by the quality mask or a classifier gate).  Results carry the
nodata and not-scanned cells as unobserved areas (:mod:`minescan.scan.assess`),
so a site missing there is "unknown", never "gone".

Cells are :func:`cell_size` scene px (16 px = 160 m for Sentinel-2 10 m bands on
a full tile: a 687 x 687 grid); a cell's state is taken at its centre pixel.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from minescan.raster.grid import Tile

# Ordered so that merging the maps of a split scene's parts is an element-wise minimum.
SEEN, NOT_SCANNED, NODATA, UNTOUCHED = 0, 1, 2, 3


def cell_size(width: int, height: int) -> int:
    """Scene px per coverage cell: 16, or more so the grid stays within 2048 cells a side."""
    return max(16, -(-max(width, height) // 2048))


class Coverage:
    """The coverage map of one scan (see the module docstring); ``state`` uint8 [rows, cols]."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.factor = cell_size(width, height)
        self.state = np.full((-(-height // self.factor), -(-width // self.factor)), UNTOUCHED, np.uint8)

    def _cells(self, tile: Tile) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """The cells whose centres lie in ``tile``'s part inside the scene, and those centres in tile pixels."""
        f = self.factor
        r0, c0 = -(-(tile.row_off - f // 2) // f), -(-(tile.col_off - f // 2) // f)
        r1 = -(-(tile.row_off + tile.valid_height - f // 2) // f)
        c1 = -(-(tile.col_off + tile.valid_width - f // 2) // f)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.state.shape[0]), min(c1, self.state.shape[1])
        rows = np.arange(r0, r1) * f + f // 2 - tile.row_off
        cols = np.arange(c0, c1) * f + f // 2 - tile.col_off
        return slice(r0, r1), slice(c0, c1), rows, cols

    def add(self, tile: Tile, nodata: np.ndarray | None) -> None:
        """A scanned tile and its nodata mask (tile px; None: data everywhere)."""
        rs, cs, rows, cols = self._cells(tile)
        if not len(rows) or not len(cols):
            return
        if nodata is None or not nodata.any():
            self.state[rs, cs] = SEEN
        else:
            seen = ~nodata[rows[:, None], cols[None, :]]
            block = self.state[rs, cs]
            block[seen] = SEEN
            block[~seen & (block != SEEN)] = NODATA

    def not_scanned(self, tiles: Iterable[Tile]) -> None:
        """Tiles kept from the detector: their cells no scanned tile saw become not scanned."""
        for tile in tiles:
            rs, cs, _, _ = self._cells(tile)
            block = self.state[rs, cs]
            block[block >= NODATA] = NOT_SCANNED

    def merge(self, other: "Coverage") -> None:
        """Take in another part's map of the same scene (a split scene's parts: :mod:`minescan.scan.split`)."""
        np.minimum(self.state, other.state, out=self.state)

    @property
    def final(self) -> np.ndarray:
        """The states once every tile is in: cells no tile held data under are nodata (all-nodata tiles are never scanned)."""
        return np.where(self.state == UNTOUCHED, NODATA, self.state).astype(np.uint8)
