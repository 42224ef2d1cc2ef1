"""A quicklook per scene: the scene small, in true colour, with its detections drawn and a legend beside it.

The scene is read decimated (rasterio's ``out_shape``; GDAL serves it from
overviews or JPEG 2000 resolution levels where the file has them) to at most
``max_size`` px a side, so a 10980 px Sentinel-2 tile becomes a PNG of a
few MB.  Colours are stretched between the 2nd and 98th percentile of the
valid pixels, for eyes rather than for the model; nodata is black.  Where a
classifier gate kept tiles from the detector, the pixels no detected tile
covered are dimmed to a dark grey (``GATED_DIM``): the detector never looked
there, so "nothing outlined" there means "not searched", not "nothing found".

The drawing is :mod:`minescan.results.pictures`'s: the map (exactly the
decimated scene's size, at image pixel (0, 0)) with each detection outlined in
its class's colour, and a legend panel at its right with title, date, model,
counts per class, the scale bar and north arrow.  :class:`Decorations` says
what the scan knows beyond the file (labels, date, model, quality mask,
flagged detections, new sites); without it the title is the scene's name and
classes are listed by id.

A heatmap's quicklook (:func:`render_heatmap`) shows one class's probability
over the scene, dimmed to grey so the colours read as the map: cells below
``HEATMAP_FLOOR`` show the scene, the rest a yellow-to-red ramp whose opacity
grows with the probability, and the edge of the area at or above the
threshold (a region's outline) is drawn in white.  Nodata cells show the scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from minescan.results import pictures
from minescan.raster.radiometry import percentile_stretch
from minescan.raster.grid import Tile
from minescan.raster.scene import Scene
from minescan.model.detections import SceneDetections

# Class 1, 2, ...: yellow, cyan, magenta, orange, lime; repeats beyond (pictures.COLOURS).
_COLOURS = np.array(pictures.COLOURS, np.uint8)


@dataclass(frozen=True)
class Decorations:
    """What a quicklook says beyond the scene file: its legend's words and the marks over the map.

    ``transform``/``crs`` (scene pixel -> map; rasterio or pyproj CRS) place the scale bar and north arrow;
    None: the scene file's own (no bar nor arrow where the file has no CRS).  ``masked``: a
    :class:`~minescan.quality.mask.QualityMask` over the scene, its masked cells shaded; ``flagged``: bool per
    detection, drawn dashed; ``highlight`` [M, 4] scene px: sites new since the last scan, ringed in red and
    counted in the legend as ``"<highlight_label>: M"`` (e.g. ``"new since 2026-11-01"``).
    """

    title: str | None = None  # scene name (default: the scene file's name)
    date: str | None = None  # "YYYY-MM-DD"
    model: str | None = None
    labels: Mapping[int, str] = field(default_factory=dict)
    transform: Any = None
    crs: Any = None
    masked: Any = None  # QualityMask | None
    flagged: np.ndarray | None = None
    highlight: np.ndarray | None = None
    highlight_label: str = "new"

    def subtitle(self) -> str:
        """``"2026-11-27 · model.onnx"`` from what is known ('' when nothing is)."""
        return " · ".join(part for part in (self.date, self.model) if part)


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


def read_base(scene: Scene, max_size: int) -> np.ndarray:
    """The scene decimated to at most ``max_size`` px a side and stretched 2-98 %, uint8 [H, W, 3]; nodata black."""
    sample = scene.overview(max_size)
    valid = ~sample.nodata
    if valid.any():
        return percentile_stretch(sample.data, valid, 2.0, 98.0).apply(sample.data, sample.nodata)
    return np.zeros((*sample.nodata.shape, 3), np.uint8)


def _scale(image: np.ndarray, scene: Scene) -> np.ndarray:
    """Image px per scene px: x, y, x, y."""
    return np.array([image.shape[1] / scene.width, image.shape[0] / scene.height] * 2)


def render(scene: Scene, detections: SceneDetections, max_size: int, *, gated: Sequence[Tile] = (),
           grid: Iterable[Tile] | None = None) -> np.ndarray:
    """The quicklook's map alone, uint8 [H, W, 3]: the scene, ``gated`` tiles of ``grid`` dimmed, detections outlined."""
    image = read_base(scene, max_size)
    scale = _scale(image, scene)
    if gated:
        _dim_gated(image, gated, grid if grid is not None else gated, scale)
    return pictures.draw_map(image, tuple(scale[:2]), detections.boxes, detections.classes)


def decorate(scene: Scene, image: np.ndarray, detections: SceneDetections, decorations: Decorations | None, *,
             gated: int = 0) -> np.ndarray:
    """The whole detector quicklook from its base ``image`` (already dimmed): map and legend panel."""
    deco = decorations or Decorations()
    extra = [("dimmed", (40, 40, 40), f"dimmed: not searched (gate), {gated} tile(s)")] if gated else []
    return pictures.draw_quicklook(
        image, tuple(_scale(image, scene)[:2]), detections.boxes, detections.classes, labels=deco.labels,
        flagged=deco.flagged, highlight=deco.highlight, highlight_label=deco.highlight_label, masked=deco.masked,
        title=deco.title or scene.name, subtitle=deco.subtitle(), crs=deco.crs if deco.crs is not None else scene.crs,
        transform=deco.transform if deco.transform is not None else scene.transform,
        scene_size=(scene.width, scene.height), extra=extra)


HEATMAP_FLOOR = 0.1  # probabilities below this are not drawn: the scene stays readable under a quiet map
# Probability -> colour anchors (0.1 pale yellow, 0.5 orange, 1.0 deep red), linear between them.
_RAMP_AT = np.array([HEATMAP_FLOOR, 0.5, 1.0])
_RAMP = np.array([(255, 255, 150), (255, 140, 0), (200, 0, 30)], np.float32)


def ramp_colour(p: float) -> tuple[int, int, int]:
    """The heatmap's colour for probability ``p`` (the legend's ramp)."""
    return tuple(int(round(float(np.interp(p, _RAMP_AT, _RAMP[:, k])))) for k in range(3))  # type: ignore[return-value]


def _cells_at(scale: float, size: int, stride: int, cells: int) -> np.ndarray:
    """For each of ``size`` quicklook pixels along an axis, the heatmap cell under its centre."""
    return np.minimum(((np.arange(size) + 0.5) * scale // stride).astype(np.int64), cells - 1)


def render_heatmap(scene: Scene, probability: np.ndarray, stride: int, max_size: int, threshold: float) -> np.ndarray:
    """The quicklook of one class: uint8 [H, W, 3]; ``probability`` [rows, cols] of cells of ``stride`` px (NaN nodata)."""
    base = read_base(scene, max_size)
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
                            threshold: float, decorations: Decorations | None = None,
                            class_name: str | None = None) -> Path:
    """Render one class's ``probability`` over the scene at ``dataset`` with its legend panel and write it as a
    PNG at ``path`` (atomically).  ``class_name`` names the class in the legend; ``decorations``' title, date, model,
    CRS and transform are used (its marks, which are a detector's, are not drawn)."""
    deco = decorations or Decorations()
    with Scene(dataset, bands=bands, nodata=nodata) as scene:
        image = render_heatmap(scene, probability, stride, max_size, threshold)
        what = f"probability of {class_name}" if class_name else "probability"
        entries = [("ramp", None, f"{what}: {HEATMAP_FLOOR:g} (pale) to 1 (red)"),
                   ("edge", None, f"white line: {what} = {threshold:g}")]
        metres, north = pictures.map_geometry(deco.crs if deco.crs is not None else scene.crs,
                                               deco.transform if deco.transform is not None else scene.transform,
                                               scene.width, scene.height, image.shape[1])
        picture = pictures.compose(image, title=deco.title or scene.name, subtitle=deco.subtitle(), entries=entries,
                                   metres_per_px=metres, north=north)
    return pictures.save_png(path, picture)


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
    decorations: Decorations | None = None,
) -> Path:
    """Render the scene at ``dataset`` with ``detections`` (``gated`` tiles of ``grid`` dimmed) and its legend panel
    (:class:`Decorations`), and write it as a PNG at ``path`` (atomically).  The map part is at most ``max_size`` px
    a side, at image pixel (0, 0); the panel adds to the right (and below, when its content is taller than the map)."""
    with Scene(dataset, bands=bands, nodata=nodata) as scene:
        image = read_base(scene, max_size)
        if gated:
            _dim_gated(image, gated, grid if grid is not None else gated, _scale(image, scene))
        picture = decorate(scene, image, detections, decorations, gated=len(gated))
    return pictures.save_png(path, picture)
