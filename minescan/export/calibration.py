"""Calibration tiles: what INT8 scales are measured on, rendered exactly as a scan renders tiles.

:func:`calibration_tiles` cuts tiles from the GeoTIFFs in a directory with
the scan's own readers: :class:`~minescan.raster.scene.Scene` (bands chosen
by the model's recipe or found from the band descriptions, nodata masked)
over a :class:`~minescan.raster.grid.TileGrid` at the model's input size,
then the scan's radiometry (uint8 passes through; uint16 gets the recipe's
``(DN + offset) / scale * gain`` rendering).  Tiles that are mostly nodata
are skipped, and the rest are taken evenly spaced over all scenes, so a
few scenes give a spread of terrain rather than one corner.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.export.errors import ExportError
from minescan.raster.grid import TileGrid
from minescan.raster.radiometry import passthrough, reflectance_gain
from minescan.raster.scene import Scene
from minescan.model.metadata import Recipe

SCENE_SUFFIXES = (".tif", ".tiff")
MAX_NODATA_FRACTION = 0.5


def calibration_tiles(
    directory: str | Path, size: tuple[int, int], recipe: Recipe, *, count: int = 16
) -> np.ndarray:
    """Up to ``count`` uint8 tiles [N, H, W, 3] from the GeoTIFFs in ``directory``, rendered with ``recipe``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"calibration directory {directory} does not exist")
    scenes = sorted(p for p in directory.iterdir() if p.suffix.lower() in SCENE_SUFFIXES)
    if not scenes:
        raise ExportError(f"calibration directory {directory} holds no {'/'.join(SCENE_SUFFIXES)} scenes")
    height, width = size
    if height != width:
        raise ExportError(f"calibration tiles are square like scan tiles; the model takes {height}x{width}")
    bands = recipe.bands
    candidates = []
    for path in scenes:
        try:
            with Scene(path, bands=bands) as scene:
                candidates.extend((path, tile) for tile in TileGrid(scene.width, scene.height, height, 0))
        except MinescanError as exc:
            raise ExportError(f"calibration scene {path}: {exc}") from exc
    picked = candidates[:: max(1, len(candidates) // count)]
    tiles = []
    for path in scenes:
        with Scene(path, bands=bands) as scene:
            radiometry = passthrough(3) if scene.dtype == "uint8" else reflectance_gain(
                3, gain=recipe.gain or DEFAULTS.gain, offset=recipe.offset or DEFAULTS.offset, scale=recipe.scale or DEFAULTS.scale
            )
            for data in (scene.read(tile) for source, tile in picked if source == path):
                if data.nodata.mean() <= MAX_NODATA_FRACTION:
                    tiles.append(radiometry.apply(data.data, data.nodata))
    if not tiles:
        raise ExportError(f"calibration scenes in {directory} have no tile with at most {MAX_NODATA_FRACTION:.0%} nodata")
    return np.stack(tiles[:count])
