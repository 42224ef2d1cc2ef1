"""Calibration tiles: what INT8 scales are measured on, rendered exactly as a scan renders tiles.

:func:`calibration_tiles` cuts tiles from the GeoTIFFs in a directory with
the scan's own plan (:func:`minescan.scan.plan.plan_scan`, given the recipe
the model is exported with): bands chosen by the recipe or found from the band
descriptions, nodata masked, tiles at the model's input size without overlap,
and the scan's radiometry for the scene's data type (uint8 passes through;
other types get the recipe's ``(value + offset) / scale * gain`` rendering).  Tiles that are mostly nodata
are skipped, and the rest are taken evenly spaced over all scenes, so a
few scenes give a spread of terrain rather than one corner.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from minescan.errors import MinescanError
from minescan.export.errors import ExportError
from minescan.model.metadata import ModelMetadata, Recipe
from minescan.raster.sources.source import Source
from minescan.scan.plan import ModelFacts, ScanOptions, plan_scan

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
    # The scan's own plan renders the tiles: the same bands, nodata and radiometry rules (minescan.scan.plan).
    facts = ModelFacts("the model", "-", None, None, 1, height, ModelMetadata(recipe=recipe))
    plans = []
    for path in scenes:
        try:
            plans.append(plan_scan(Source(str(path), "raster", path, path.stem), ScanOptions(overlap=0), facts))
        except MinescanError as exc:
            raise ExportError(f"calibration scene {path}: {exc}") from exc
    candidates = [(plan, tile) for plan in plans for tile in plan.grid]
    picked = candidates[:: max(1, len(candidates) // count)]
    tiles = []
    for plan in plans:
        with plan.open_scene() as scene:
            for data in (scene.read(tile) for source, tile in picked if source is plan):
                if data.nodata.mean() <= MAX_NODATA_FRACTION:
                    tiles.append(plan.radiometry.apply(data.data, data.nodata))
    if not tiles:
        raise ExportError(f"calibration scenes in {directory} have no tile with at most {MAX_NODATA_FRACTION:.0%} nodata")
    return np.stack(tiles[:count])
