"""A quicklook per scene: the scene small, in true colour, with its detections drawn.

The scene is read decimated (rasterio's ``out_shape``; GDAL serves it from
overviews or JPEG 2000 resolution levels where the file has them) to at most
``max_size`` px a side, so a 10980 px Sentinel-2 tile becomes a PNG of a
few MB.  Colours are stretched between the 2nd and 98th percentile of the
valid pixels, for eyes rather than for the model; nodata is black.  Each
detection is outlined in its class's colour.  Where a classifier gate kept
tiles from the detector, the pixels no detected tile covered are dimmed to a
dark grey (``GATED_DIM``): the detector never looked there, so "nothing
outlined" there means "not searched", not "nothing found".

A heatmap's quicklook (:func:`render_heatmap`) shows one class's probability
over the scene, dimmed to grey so the colours read as the map: cells below
``HEATMAP_FLOOR`` show the scene, the rest a yellow-to-red ramp whose opacity
grows with the probability, and the edge of the area at or above the
threshold (a region's outline) is drawn in white.  Nodata cells show the scene.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from minescan.results.atomic import write_atomically
from minescan.results.png import encode_png
from minescan.raster.radiometry import percentile_stretch
from minescan.raster.grid import Tile
from minescan.raster.scene import Scene
from minescan.model.detections import SceneDetections

# Class 1, 2, ...: yellow, cyan, magenta, orange, lime; repeats beyond.
_COLOURS = np.array([(255, 230, 0), (0, 230, 255), (255, 0, 200), (255, 128, 0), (128, 255, 0)], np.uint8)


def _outline(image: np.ndarray, box: np.ndarray, colour: np.ndarray, width: int) -> None:
    """Draw a rectangle's outline ``width`` px thick, inside the box and clipped to the image."""
    h, w = image.shape[:2]
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, w)), int(np.clip(np.ceil(box[3]), y0 + 1, h))
    image[y0 : min(y0 + width, y1), x0:x1] = colour
    image[max(y1 - width, y0) : y1, x0:x1] = colour
    image[y0:y1, x0 : min(x0 + width, x1)] = colour
    image[y0:y1, max(x1 - width, x0) : x1] = colour


GATED_DIM = 0.35  # brightness kept where the gate kept the detector away


def _window(tile: Tile, scale: np.ndarray) -> tuple[slice, slice]:
    """The quicklook pixels of ``tile``'s part inside the scene."""
    x0, y0 = int(tile.col_off * scale[0]), int(tile.row_off * scale[1])
    x1 = int(np.ceil((tile.col_off + tile.valid_width) * scale[0]))
    y1 = int(np.ceil((tile.row_off + tile.valid_height) * scale[1]))
    return slice(y0, y1), slice(x0, x1)


def _dim_gated(image: np.ndarray, gated: Sequence[Tile], grid: Iterable[Tile], scale: np.ndarray) -> None:
    """Dim the pixels of ``gated`` tiles that no other tile of ``grid`` (one the detector ran on, or nodata) covers."""
    unseen = np.zeros(image.shape[:2], bool)
    for tile in gated:
        unseen[_window(tile, scale)] = True
    gated_places = {(t.row, t.col) for t in gated}
    for tile in grid:
        if (tile.row, tile.col) not in gated_places:
            unseen[_window(tile, scale)] = False
    image[unseen] = (image[unseen] * GATED_DIM).astype(np.uint8)


def render(scene: Scene, detections: SceneDetections, max_size: int, *, gated: Sequence[Tile] = (),
           grid: Iterable[Tile] | None = None) -> np.ndarray:
    """The quicklook image, uint8 [H, W, 3]; ``gated`` tiles of ``grid`` dimmed (see the module docstring)."""
    sample = scene.overview(max_size)
    valid = ~sample.nodata
    if valid.any():
        image = percentile_stretch(sample.data, valid, 2.0, 98.0).apply(sample.data, sample.nodata)
    else:
        image = np.zeros((*sample.nodata.shape, 3), np.uint8)
    scale = np.array([image.shape[1] / scene.width, image.shape[0] / scene.height] * 2)
    if gated:
        _dim_gated(image, gated, grid if grid is not None else gated, scale)
    for box, klass in zip(detections.boxes.reshape(-1, 4), detections.classes):
        _outline(image, box * scale, _COLOURS[(int(klass) - 1) % len(_COLOURS)], 2)
    return image


HEATMAP_FLOOR = 0.1  # probabilities below this are not drawn: the scene stays readable under a quiet map
# Probability -> colour anchors (0.1 pale yellow, 0.5 orange, 1.0 deep red), linear between them.
_RAMP_AT = np.array([HEATMAP_FLOOR, 0.5, 1.0])
_RAMP = np.array([(255, 255, 150), (255, 140, 0), (200, 0, 30)], np.float32)


def _cells_at(scale: float, size: int, stride: int, cells: int) -> np.ndarray:
    """For each of ``size`` quicklook pixels along an axis, the heatmap cell under its centre."""
    return np.minimum(((np.arange(size) + 0.5) * scale // stride).astype(np.int64), cells - 1)


def render_heatmap(scene: Scene, probability: np.ndarray, stride: int, max_size: int, threshold: float) -> np.ndarray:
    """The quicklook of one class: uint8 [H, W, 3]; ``probability`` [rows, cols] of cells of ``stride`` px (NaN nodata)."""
    base = render(scene, SceneDetections.empty(), max_size)
    grey = base.astype(np.float32).mean(axis=2, keepdims=True)
    image = 0.7 * (0.35 * base.astype(np.float32) + 0.65 * grey)  # dim and mostly grey: the colours are the map's
    h, w = image.shape[:2]
    rows = _cells_at(scene.height / h, h, stride, probability.shape[0])
    cols = _cells_at(scene.width / w, w, stride, probability.shape[1])
    p = probability[rows[:, None], cols[None, :]]
    drawn = np.nan_to_num(p, nan=0.0) >= HEATMAP_FLOOR
    colour = np.stack([np.interp(np.nan_to_num(p), _RAMP_AT, _RAMP[:, k]) for k in range(3)], axis=-1)
    alpha = np.where(drawn, 0.45 + 0.45 * np.clip(np.nan_to_num(p), 0, 1), 0.0)[..., None]
    image = image * (1 - alpha) + colour * alpha
    above = np.nan_to_num(p, nan=0.0) >= threshold
    edge = np.zeros_like(above)
    edge[1:] |= above[1:] != above[:-1]
    edge[:, 1:] |= above[:, 1:] != above[:, :-1]
    image[edge] = 255
    return image.round().astype(np.uint8)


def write_heatmap_quicklook(path: str | os.PathLike[str], dataset: str | os.PathLike[str], probability: np.ndarray,
                            stride: int, *, bands: tuple[int, ...] | None, nodata: float | None, max_size: int,
                            threshold: float) -> Path:
    """Render one class's ``probability`` over the scene at ``dataset`` and write it as a PNG at ``path``."""
    with Scene(dataset, bands=bands, nodata=nodata) as scene:
        image = render_heatmap(scene, probability, stride, max_size, threshold)
    write_atomically(path, encode_png(image))
    return Path(path)


def write_quicklook(
    path: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    detections: SceneDetections,
    *,
    bands: tuple[int, ...] | None,
    nodata: float | None,
    max_size: int,
    gated: Sequence[Tile] = (),
    grid: Iterable[Tile] | None = None,
) -> Path:
    """Render the scene at ``dataset`` with ``detections`` (``gated`` tiles of ``grid`` dimmed) and write it as a PNG at ``path``."""
    with Scene(dataset, bands=bands, nodata=nodata) as scene:
        image = render(scene, detections, max_size, gated=gated, grid=grid)
    write_atomically(path, encode_png(image))
    return Path(path)
