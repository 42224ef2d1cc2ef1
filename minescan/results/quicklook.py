"""A quicklook per scene: the scene small, in true colour, with its detections drawn.

The scene is read decimated (rasterio's ``out_shape``; GDAL serves it from
overviews or JPEG 2000 resolution levels where the file has them) to at most
``max_size`` px a side, so a 10980 px Sentinel-2 tile becomes a PNG of a
few MB.  Colours are stretched between the 2nd and 98th percentile of the
valid pixels, for eyes rather than for the model; nodata is black.  Each
detection is outlined in its class's colour.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minescan.results.atomic import write_atomically
from minescan.results.png import encode_png
from minescan.raster.radiometry import percentile_stretch
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


def render(scene: Scene, detections: SceneDetections, max_size: int) -> np.ndarray:
    """The quicklook image, uint8 [H, W, 3]."""
    sample = scene.overview(max_size)
    valid = ~sample.nodata
    if valid.any():
        image = percentile_stretch(sample.data, valid, 2.0, 98.0).apply(sample.data, sample.nodata)
    else:
        image = np.zeros((*sample.nodata.shape, 3), np.uint8)
    scale = np.array([image.shape[1] / scene.width, image.shape[0] / scene.height] * 2)
    for box, klass in zip(detections.boxes.reshape(-1, 4), detections.classes):
        _outline(image, box * scale, _COLOURS[(int(klass) - 1) % len(_COLOURS)], 2)
    return image


def write_quicklook(
    path: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    detections: SceneDetections,
    *,
    bands: tuple[int, ...] | None,
    nodata: float | None,
    max_size: int,
) -> Path:
    """Render the scene at ``dataset`` with ``detections`` and write it as a PNG at ``path``."""
    with Scene(dataset, bands=bands, nodata=nodata) as scene:
        image = render(scene, detections, max_size)
    write_atomically(path, encode_png(image))
    return Path(path)
