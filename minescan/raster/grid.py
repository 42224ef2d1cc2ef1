"""The tile grid: overlapping square windows that cover a scene.

Tiles are ``size`` x ``size`` px and start every ``size - overlap`` px along
each axis.  Where the scene's extent is not a whole number of strides, the
last tile of a row or column is *shifted inward* so that it ends exactly on
the scene edge: it overlaps its neighbour by more than ``overlap``, and no
tile ever reads past the scene.  Only along an axis shorter than one tile is
a tile allowed to extend past the scene; the reader pads it with zeros.

Every pixel is covered, consecutive tiles overlap by at least ``overlap``,
and every tile edge that is not a scene edge (an *interior* edge) has a
neighbour tile reaching at least ``overlap`` px beyond it: the property the
stitcher relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from minescan.errors import MinescanError


class TileGridError(MinescanError):
    """A tile size or overlap that cannot make a grid."""


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the grid and its window in scene pixels.

    ``width``/``height`` are the tile's size (the model's input); ``valid_width``
    and ``valid_height`` the part inside the scene (smaller only where the scene
    is smaller than a tile).
    """

    row: int
    col: int
    col_off: int
    row_off: int
    width: int
    height: int
    valid_width: int
    valid_height: int
    interior_left: bool
    interior_top: bool
    interior_right: bool
    interior_bottom: bool


def axis_starts(extent: int, size: int, overlap: int) -> list[int]:
    """Tile offsets along one axis of ``extent`` px (see the module docstring)."""
    if extent <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, extent - size, stride))
    starts.append(extent - size)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """All tiles over a ``width`` x ``height`` scene, in row-major order."""

    width: int
    height: int
    size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise TileGridError(f"scene is empty: {self.width} x {self.height} px")
        if self.size < 16:
            raise TileGridError(f"tile size {self.size} px is too small (at least 16)")
        if not 0 <= self.overlap < self.size:
            raise TileGridError(f"overlap {self.overlap} px must be between 0 and the tile size ({self.size} px) less 1")

    @property
    def col_starts(self) -> list[int]:
        return axis_starts(self.width, self.size, self.overlap)

    @property
    def row_starts(self) -> list[int]:
        return axis_starts(self.height, self.size, self.overlap)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __iter__(self) -> Iterator[Tile]:
        rows, cols = self.row_starts, self.col_starts
        for r, y in enumerate(rows):
            for c, x in enumerate(cols):
                yield Tile(
                    row=r,
                    col=c,
                    col_off=x,
                    row_off=y,
                    width=self.size,
                    height=self.size,
                    valid_width=min(self.size, self.width - x),
                    valid_height=min(self.size, self.height - y),
                    interior_left=c > 0,
                    interior_top=r > 0,
                    interior_right=c < len(cols) - 1,
                    interior_bottom=r < len(rows) - 1,
                )
