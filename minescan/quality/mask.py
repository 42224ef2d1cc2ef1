"""A scene's quality mask as a value, and what is measured on it.

Concept: a :class:`QualityMask` is a boolean grid laid over the scene from its
top-left corner, each cell ``factor`` x ``factor`` scene pixels (the last row
and column may reach past the scene's edge); True = masked (cloud, shadow,
cirrus, snow, saturated, no data: whatever the mask's source says cannot be
trusted).  A Sentinel-2 SCL layer (20 m) over the 10 m bands has
``factor`` 2; a mask file is resampled onto such a grid
(:mod:`minescan.quality.read`).

Everything here is a small pure function of the mask and scene pixel
coordinates (pixel-corner convention, as boxes everywhere in minescan):

* :func:`box_shares`: the masked share of each box's area, exact (cells cut
  by a box edge count by the part inside);
* :func:`tile_shares`: the same for the tiles of a grid (their part inside the scene);
* :attr:`QualityMask.clear_share`: the share of the scene's valid pixels that is clear;
* :func:`mask_polygons`: the masked cells as polygons on the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from minescan.raster.grid import Tile


@dataclass(frozen=True)
class QualityMask:
    """Masked cells over a scene (see the module docstring).

    ``masked`` bool [rows, cols], cell (r, c) covering scene pixels rows
    ``r*factor .. (r+1)*factor`` and columns ``c*factor .. (c+1)*factor``;
    ``width``/``height``: the scene's size in px; ``origin``: where the mask
    came from, in words; ``classes``: the SCL classes masked (None for a mask file);
    ``valid``: cells holding scene data (None: all), so the clear share is of the scene's data, not of its nodata.
    """

    masked: np.ndarray
    factor: int
    width: int
    height: int
    origin: str
    classes: tuple[int, ...] | None = None
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows, cols = -(-self.height // self.factor), -(-self.width // self.factor)
        if self.masked.shape != (rows, cols) or self.masked.dtype != bool:
            raise ValueError(f"a mask of {self.width} x {self.height} px at factor {self.factor} is bool {rows} x {cols}, "
                             f"got {self.masked.dtype} {self.masked.shape}")
        if self.valid is not None and self.valid.shape != self.masked.shape:
            raise ValueError(f"valid cells {self.valid.shape} do not match the mask {self.masked.shape}")

    @property
    def clear_share(self) -> float:
        """The share of the scene's valid area that is not masked (area-weighted: edge cells count by their part inside)."""
        weights = _cell_weights(self.height, self.factor)[:, None] * _cell_weights(self.width, self.factor)[None, :]
        valid = weights if self.valid is None else weights * self.valid
        total = float(valid.sum())
        return float((valid * ~self.masked).sum()) / total if total else 0.0

    def box_shares(self, boxes: np.ndarray) -> np.ndarray:
        """:func:`box_shares` of this mask."""
        return box_shares(self, boxes)


def _cell_weights(extent: int, factor: int) -> np.ndarray:
    """Scene px of each cell along an axis of ``extent`` px (the last cell may be cut by the edge)."""
    count = -(-extent // factor)
    weights = np.full(count, float(factor))
    weights[-1] = extent - factor * (count - 1)
    return weights


def _overlap(lo: float, hi: float, count: int, factor: int) -> tuple[int, np.ndarray]:
    """The first cell ``[lo, hi)`` touches along an axis, and how many px of each touched cell lie inside it."""
    first = max(0, int(np.floor(lo / factor)))
    last = min(count, int(np.ceil(hi / factor)))
    if last <= first:
        return first, np.zeros(0)
    starts = np.arange(first, last) * float(factor)
    return first, np.clip(np.minimum(starts + factor, hi) - np.maximum(starts, lo), 0, None)


def box_shares(mask: QualityMask, boxes: np.ndarray) -> np.ndarray:
    """The masked share of each box's area, float64 [N] in [0, 1]; ``boxes`` [N, 4] scene px (x0, y0, x1, y1).

    Exact for any box: each cell counts by the area of its part inside the box.
    The part of a box outside the scene counts as masked (nothing there was seen).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows, cols = mask.masked.shape
    out = np.zeros(len(boxes))
    cells = mask.masked.astype(np.float64)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        area = (x1 - x0) * (y1 - y0)
        if area <= 0:
            continue
        c0, wx = _overlap(x0, min(x1, mask.width), cols, mask.factor)
        r0, wy = _overlap(y0, min(y1, mask.height), rows, mask.factor)
        seen = float(wy.sum() * wx.sum())
        masked = float(wy @ cells[r0 : r0 + len(wy), c0 : c0 + len(wx)] @ wx) if seen else 0.0
        out[i] = (masked + (area - seen)) / area
    return np.clip(out, 0.0, 1.0)


def tile_shares(mask: QualityMask, tiles: Iterable[Tile]) -> dict[tuple[int, int], float]:
    """The masked share of each tile's part inside the scene, by (row, col)."""
    tiles = list(tiles)
    boxes = np.array([(t.col_off, t.row_off, t.col_off + t.valid_width, t.row_off + t.valid_height) for t in tiles],
                     np.float64).reshape(-1, 4)
    return {(t.row, t.col): float(s) for t, s in zip(tiles, box_shares(mask, boxes))}


def mask_polygons(masked: np.ndarray, factor: int, transform) -> np.ndarray:
    """The True cells of ``masked`` as polygons (shapely, the scene's CRS) through the scene's ``transform``.

    Cells are joined into connected areas (rasterio's ``features.shapes``, 4-connected), so a cloud is one polygon.
    """
    import shapely
    from affine import Affine
    from rasterio import features

    if not masked.any():
        return np.array([], dtype=object)
    cell_transform = transform * Affine.scale(factor)
    shapes = features.shapes(masked.astype(np.uint8), mask=masked, transform=cell_transform, connectivity=4)
    return np.array([shapely.geometry.shape(geometry) for geometry, _ in shapes], dtype=object)


def window_mask(mask: QualityMask, col_off: float, row_off: float, width: float, height: float,
                shape: tuple[int, int]) -> np.ndarray:
    """The mask over a scene window read into ``shape`` px (a decimated read): the cell under each output pixel's centre."""
    out_rows, out_cols = shape
    rows = ((row_off + (np.arange(out_rows) + 0.5) * height / out_rows) // mask.factor).astype(np.int64)
    cols = ((col_off + (np.arange(out_cols) + 0.5) * width / out_cols) // mask.factor).astype(np.int64)
    rows = np.clip(rows, 0, mask.masked.shape[0] - 1)
    cols = np.clip(cols, 0, mask.masked.shape[1] - 1)
    return mask.masked[rows[:, None], cols[None, :]]


def mask_from_polygons(polygons: np.ndarray, width: int, height: int, transform, origin: str,
                       max_cells: int = 2048) -> QualityMask:
    """A mask over a scene from masked areas on the map (a result's unobserved polygons, scene CRS): a cell is masked
    when its centre lies in one; cells of at least 1 px and at most ``max_cells`` a side (for pictures, not for shares)."""
    import shapely
    from affine import Affine
    from rasterio import features

    factor = max(1, -(-max(width, height) // max_cells))
    shape = (-(-height // factor), -(-width // factor))
    valid = [g for g in polygons if g is not None and not shapely.is_empty(g)]
    if not valid:
        return QualityMask(np.zeros(shape, bool), factor, width, height, origin)
    burnt = features.rasterize(((g, 1) for g in valid), out_shape=shape, transform=transform * Affine.scale(factor),
                               fill=0, dtype="uint8")
    return QualityMask(burnt.astype(bool), factor, width, height, origin)
