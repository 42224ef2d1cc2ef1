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
        """The cells whose centres lie in ``tile``'s part inside the scene, and those centres in tile pixels.

        A last row or column cell reaching past the scene's edge is judged at the scene's last pixel instead.
        """
        f = self.factor
        rows, cols = self._centres(tile.row_off, tile.valid_height, self.height), self._centres(tile.col_off, tile.valid_width, self.width)
        if not len(rows) or not len(cols):
            return slice(0, 0), slice(0, 0), rows, cols
        r0, c0 = int(rows[0] // f), int(cols[0] // f)
        return slice(r0, r0 + len(rows)), slice(c0, c0 + len(cols)), rows - tile.row_off, cols - tile.col_off

    def _centres(self, offset: int, length: int, extent: int) -> np.ndarray:
        """Scene px (clamped into the scene) of the cell centres along an axis that lie in ``[offset, offset + length)``."""
        f = self.factor
        first, last = max(0, offset // f - 1), min(-(-extent // f), (offset + length) // f + 2)
        centres = np.minimum(np.arange(first, last) * f + f // 2, extent - 1)
        return centres[(centres >= offset) & (centres < offset + length)]

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
        self.state = np.minimum(self.state, other.state)  # a new array: a part sent back by Ray arrives read-only

    @property
    def final(self) -> np.ndarray:
        """The states once every tile is in: cells no tile held data under are nodata (all-nodata tiles are never scanned)."""
        return np.where(self.state == UNTOUCHED, NODATA, self.state).astype(np.uint8)
