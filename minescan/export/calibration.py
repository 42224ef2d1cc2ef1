"""Calibration tiles: what INT8 scales are measured on, rendered exactly as a scan renders tiles.

:func:`calibration_tiles` cuts tiles from the GeoTIFFs in a directory with
the scan's own plan (:func:`minescan.scan.plan.plan_scan`, given the recipe
the model is exported with): bands chosen by the recipe or found from the band
descriptions, nodata masked, tiles at the model's input size without overlap,
and the scan's radiometry for the scene's data type (uint8 passes through;
other types get the recipe's ``(value + offset) / scale * gain`` rendering).  Tiles that are mostly nodata
are skipped, and the rest are taken evenly spaced over all scenes, so a
few scenes give a spread of terrain rather than one corner.

The same scenes give the model's *input statistics* (:func:`input_statistics`,
recorded in its metadata for the domain-shift guard, measured on each scene's
statistics sample exactly as a scan measures a new scene) and, for a
``histogram_match`` normalisation, the reference levels
(:func:`histogram_reference`: the scenes rendered with the fixed gain the model
was trained on).
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from minescan.errors import MinescanError
from minescan.export.errors import ExportError
from minescan.model.metadata import ModelMetadata, Normalisation, Recipe
from minescan.model.statistics import InputStatistics
from minescan.raster.sources.source import Source
from minescan.scan.plan import ModelFacts, ScanOptions, ScanPlan, plan_scan

SCENE_SUFFIXES = (".tif", ".tiff")
MAX_NODATA_FRACTION = 0.5


def _plans(directory: str | Path, recipe: Recipe, size: int | None) -> list[ScanPlan]:
    """The scan's own plan of each calibration scene: the same bands, nodata and radiometry rules (minescan.scan.plan)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"calibration directory {directory} does not exist")
    scenes = sorted(p for p in directory.iterdir() if p.suffix.lower() in SCENE_SUFFIXES)
    if not scenes:
        raise ExportError(f"calibration directory {directory} holds no {'/'.join(SCENE_SUFFIXES)} scenes")
    facts = ModelFacts("the model", "-", None, None, 1, size, ModelMetadata(recipe=recipe))
    plans = []
    for path in scenes:
        try:
            plans.append(plan_scan(Source(str(path), "raster", path, path.stem), ScanOptions(overlap=0), facts))
        except MinescanError as exc:
            raise ExportError(f"calibration scene {path}: {exc}") from exc
    return plans


def _rendered_samples(plans: list[ScanPlan]):
    """Each scene's statistics sample rendered as its plan renders tiles: (uint8 [h, w, 3], valid [h, w])."""
    for plan in plans:
        with plan.open_scene() as scene:
            sample = scene.statistics_sample()
        yield plan.radiometry.apply(sample.data, sample.nodata), ~sample.nodata


def input_statistics(directory: str | Path, recipe: Recipe) -> InputStatistics:
    """The model's input statistics over the calibration scenes, rendered with ``recipe`` (see the module docstring)."""
    plans = _plans(directory, recipe, None)
    parts = [InputStatistics.measure(rgb, valid) for rgb, valid in _rendered_samples(plans) if valid.any()]
    if not parts:
        raise ExportError(f"calibration scenes in {directory} have no valid pixels")
    return InputStatistics.combine(parts, source=f"calibration: {len(parts)} scene(s) in {Path(directory).name}/")


HISTOGRAM_PERCENTILES = (0.5, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.5)


def histogram_reference(directory: str | Path, recipe: Recipe) -> Normalisation:
    """A ``histogram_match`` normalisation whose reference is the calibration scenes rendered with the fixed gain."""
    fixed = Recipe(bands=recipe.bands, gain=recipe.gain, offset=recipe.offset, scale=recipe.scale)
    levels, weights = [], []
    for rgb, valid in _rendered_samples(_plans(directory, fixed, None)):
        if valid.any():
            levels.append(np.percentile(rgb[valid].astype(np.float64), HISTOGRAM_PERCENTILES, axis=0).T)  # [3, P]
            weights.append(int(valid.sum()))
    if not levels:
        raise ExportError(f"calibration scenes in {directory} have no valid pixels")
    pooled = np.average(np.stack(levels), axis=0, weights=weights)
    reference = tuple(tuple(round(float(v), 2) for v in np.maximum.accumulate(band)) for band in pooled)
    return Normalisation("histogram_match", percentiles=HISTOGRAM_PERCENTILES, reference=reference)


PIXEL_BUDGET_TILE = 640  # px: tile counts are given for 640 px tiles, the scan's default
MAX_TILES = 512


def tiles_for(count: int, size: int) -> int:
    """``count`` tiles of 640 px as a count of ``size`` px tiles covering about as many pixels (at most
    :data:`MAX_TILES`, at least ``count``): 16 calibration tiles of 640 px are 512 windows of 64 px.  Small
    windows each see little; a classifier's INT8 scales calibrated on 16 of them (of which few show mining)
    cost 0.0098 F1 on fresh scenes, on 256 windows 0.0008 (benchmarks/classifier_architectures.md)."""
    return int(min(MAX_TILES, max(count, round(count * (PIXEL_BUDGET_TILE / size) ** 2))))


def calibration_tiles(
    directory: str | Path, size: tuple[int, int], recipe: Recipe, *, count: int = 16
) -> np.ndarray:
    """Up to ``count`` uint8 tiles [N, H, W, 3] from the GeoTIFFs in ``directory``, rendered with ``recipe``."""
    height, width = size
    if height != width:
        raise ExportError(f"calibration tiles are square like scan tiles; the model takes {height}x{width}")
    plans = _plans(directory, recipe, height)
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
