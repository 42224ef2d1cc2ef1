"""Sentinel-2-like test scenes with objects at known places.

A scene is a 4-band uint16 L2A-like GeoTIFF (B02, B03, B04, B08 with those
band descriptions, DN = reflectance x 10000, nodata 0) over a textured
background of field patches, smooth variation and pixel noise, in a UTM CRS
at 10 m.  Bright rectangles are placed at known positions: reddish ones are
class 1, bluish ones class 2 (what :mod:`testkit.square_detector`
finds).  Some are deliberately placed across the borders and corners of the
tile grid the scan will use, some hard against the nodata area, which cuts
a diagonal swath edge into the scene's left side as real granules have.

The scene is written in strips, so even a full 10980 x 10980 px scene never
sits in memory; the truth is returned as pixel boxes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from minescan.raster.grid import axis_starts

BANDS = ("B02", "B03", "B04", "B08")
# Reflectance (B02, B03, B04, B08) of the two object classes; max red/blue
# after the true-colour gain 2.5 is ~240, well above the background (<= 0.2).
_CLASS_REFLECTANCE = {1: (0.20, 0.30, 0.38, 0.30), 2: (0.38, 0.33, 0.20, 0.25)}
_COVERS = np.array(
    [  # B02, B03, B04, B08: dense vegetation, sparse vegetation, bare soil, water
        (0.025, 0.050, 0.030, 0.35),
        (0.045, 0.070, 0.070, 0.25),
        (0.080, 0.100, 0.140, 0.20),
        (0.040, 0.050, 0.030, 0.02),
    ],
    np.float32,
)


@dataclass(frozen=True)
class SceneSpec:
    """What to generate: size, object count, seed, the scan grid to aim at, CRS and origin."""

    width: int = 2000
    height: int = 1600
    objects: int = 30
    seed: int = 0
    tile: int = 640
    overlap: int = 128
    min_size: int = 8
    max_size: int = 40
    epsg: int = 32633
    origin: tuple[float, float] = (300000.0, 5000040.0)
    pixel_size: float = 10.0
    nodata_width: int = 0


@dataclass(frozen=True)
class Truth:
    """Known objects: pixel boxes [M, 4] (x0, y0, x1, y1, pixel corners) and classes [M]."""

    boxes: np.ndarray
    classes: np.ndarray

    @classmethod
    def of(cls, boxes: list[tuple[int, int, int, int]], classes: list[int] | None = None) -> "Truth":
        """Truth from a list of pixel boxes; class 1 unless ``classes`` says otherwise."""
        return cls(np.array(boxes, np.float64).reshape(-1, 4), np.array(classes or [1] * len(boxes), np.int32))


def _nodata(spec: SceneSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The swath edge: pixels left of a slanted line are nodata."""
    if spec.nodata_width <= 0:
        return np.zeros(np.broadcast_shapes(rows.shape, cols.shape), bool)
    return cols < spec.nodata_width - 0.25 * rows


def _place(spec: SceneSpec, rng: np.random.Generator) -> Truth:
    """Non-touching rectangles (>= 4 px apart), a third of them straddling tile borders or near nodata."""
    taken = np.zeros((spec.height, spec.width), bool)
    cuts_x = [s for s in axis_starts(spec.width, spec.tile, spec.overlap)[1:]]
    cuts_y = [s for s in axis_starts(spec.height, spec.tile, spec.overlap)[1:]]
    boxes, classes = [], []
    attempts = 0
    while len(boxes) < spec.objects and attempts < spec.objects * 200:
        attempts += 1
        w, h = rng.integers(spec.min_size, spec.max_size + 1, 2)
        kind = attempts % 6  # rotate per attempt: a kind whose places are all taken must not stall the rest
        x = int(rng.integers(0, spec.width - w))
        y = int(rng.integers(0, spec.height - h))
        if kind == 1 and cuts_x:  # across a vertical tile border
            x = int(rng.choice(cuts_x)) - int(rng.integers(1, w))
        elif kind == 2 and cuts_y:  # across a horizontal tile border
            y = int(rng.choice(cuts_y)) - int(rng.integers(1, h))
        elif kind == 3 and cuts_x and cuts_y:  # across a four-tile corner
            x = int(rng.choice(cuts_x)) - int(rng.integers(1, w))
            y = int(rng.choice(cuts_y)) - int(rng.integers(1, h))
        elif kind == 4 and spec.nodata_width > 0:  # hard against the swath edge
            x = int(np.ceil(spec.nodata_width - 0.25 * y)) + int(rng.integers(1, 6))
        if x < 0 or y < 0 or x + w > spec.width or y + h > spec.height:
            continue
        corners = _nodata(spec, np.array([y, y + h - 1]), np.array([[x], [x + w - 1]]))
        if corners.any() or taken[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4].any():
            continue
        taken[y : y + h, x : x + w] = True
        boxes.append((x, y, x + w, y + h))
        classes.append(int(rng.integers(1, 3)))
    return Truth(np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int32))


def _smooth_noise(rng: np.random.Generator, spec: SceneSpec, cell: int) -> np.ndarray:
    """A coarse random grid, one value per ``cell`` px, to be upsampled per strip."""
    return rng.random((spec.height // cell + 2, spec.width // cell + 2), np.float32)


def _upsample(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, cell: int) -> np.ndarray:
    """Bilinear upsampling of ``grid`` at pixel ``rows`` x ``cols``."""
    fy, fx = rows / cell, cols / cell
    y0, x0 = fy.astype(int), fx.astype(int)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - wx) + b * wx) * (1 - wy) + (c * (1 - wx) + d * wx) * wy


def write_scene(path: str | os.PathLike[str], spec: SceneSpec = SceneSpec(), truth: Truth | None = None) -> Truth:
    """Generate the scene described by ``spec`` at ``path`` (tiled, DEFLATE GeoTIFF); return its truth.

    ``truth`` places exactly those objects instead of random ones.
    """
    rng = np.random.default_rng(spec.seed)
    truth = truth if truth is not None else _place(spec, rng)
    patches = rng.integers(0, len(_COVERS), (spec.height // 64 + 1, spec.width // 64 + 1))
    variation = _smooth_noise(rng, spec, 48)
    profile = dict(
        driver="GTiff", width=spec.width, height=spec.height, count=4, dtype="uint16", nodata=0,
        crs=f"EPSG:{spec.epsg}", transform=from_origin(*spec.origin, spec.pixel_size, spec.pixel_size),
        tiled=True, blockxsize=512, blockysize=512, compress="deflate",
    )
    cols = np.arange(spec.width)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BANDS
        for top in range(0, spec.height, 512):
            rows = np.arange(top, min(top + 512, spec.height))
            cover = _COVERS[patches[rows // 64][:, cols // 64]]  # [h, w, 4]
            factor = 0.7 + 0.6 * _upsample(variation, rows, cols, 48)
            refl = cover * factor[..., None] + rng.normal(0, 0.004, cover.shape).astype(np.float32)
            for (x0, y0, x1, y1), klass in zip(truth.boxes.astype(int), truth.classes):
                if y1 <= rows[0] or y0 > rows[-1]:
                    continue
                r0, r1 = max(y0, rows[0]) - top, min(y1, rows[-1] + 1) - top
                refl[r0:r1, x0:x1] = np.asarray(_CLASS_REFLECTANCE[int(klass)], np.float32)
            dn = np.clip(refl * 10000, 1, 65535).astype(np.uint16)
            dn[_nodata(spec, rows[:, None], cols[None, :])] = 0
            dst.write(np.moveaxis(dn, -1, 0), window=Window(0, top, spec.width, len(rows)))
    return truth
