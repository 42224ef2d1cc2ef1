"""One scene, end to end: read tiles, render RGB, detect, stitch.

:func:`scan_scene` is the product's main job; the command line only parses
flags around it.  Settings resolve in this order: explicit option, the
model's own metadata (bands, gain, offset it was trained with), built-in
default.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from minescan.engine import Detector
from minescan.tiling.grid import TileGrid, TileGridError
from minescan.tiling.radiometry import Radiometry, passthrough, percentile_stretch, reflectance_gain
from minescan.tiling.scene import Scene, TileData
from minescan.tiling.stitch import SceneDetections, StitchSettings, Stitcher

DEFAULT_TILE = 640
DEFAULT_OVERLAP = 128


@dataclass(frozen=True)
class ScanOptions:
    """How to scan; None means "from the model's metadata, else the default"."""

    bands: tuple[int, ...] | None = None
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    batch: int = 4
    score_threshold: float = 0.5
    gain: float | None = None
    offset: float | None = None
    stretch: tuple[float, float] | None = None
    nodata: float | None = None
    stitch: StitchSettings = field(default_factory=StitchSettings)


@dataclass(frozen=True)
class ScanResult:
    """Detections of one scene (scene pixels) and what it took."""

    scene: str
    detections: SceneDetections
    crs: object
    transform: object
    tiles: int
    skipped: int
    seconds: float

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


def tile_size(options: ScanOptions, detector: Detector) -> int:
    """The tile size: the model's fixed input size, else ``--tile``, else 640."""
    sig = detector.signature
    if sig.height or sig.width:
        if sig.height != sig.width:
            raise TileGridError(f"model input is {sig.height}x{sig.width} px; minescan tiles are square")
        if options.tile not in (None, sig.height):
            raise TileGridError(f"--tile {options.tile} but the model takes fixed {sig.height}x{sig.width} px tiles")
        return int(sig.height)  # type: ignore[arg-type]
    return options.tile or DEFAULT_TILE


def choose_radiometry(scene: Scene, options: ScanOptions, detector: Detector) -> Radiometry:
    """uint8 passes through; uint16 gets the gain recipe or a scene-wide percentile stretch."""
    if scene.dtype == "uint8":
        return passthrough(len(scene.bands))
    if options.stretch:
        sample = scene.overview()
        return percentile_stretch(sample.data, ~sample.nodata, *options.stretch)
    recipe = detector.metadata.preprocessing
    gain = options.gain if options.gain is not None else float(recipe.get("gain", 2.5))
    offset = options.offset if options.offset is not None else float(recipe.get("offset", 0.0))
    scale = float(recipe.get("scale", 10000.0))
    return reflectance_gain(len(scene.bands), gain=gain, offset=offset, scale=scale)


def _batches(tiles: Iterator[TileData], size: int) -> Iterator[list[TileData]]:
    batch: list[TileData] = []
    for item in tiles:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=label, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)


def scan_scene(
    path: str | Path,
    detector: Detector,
    options: ScanOptions | None = None,
    *,
    on_tile: Callable[[int], None] | None = None,
) -> ScanResult:
    """Scan one scene; ``on_tile`` (if given) is called with the number of tiles just finished."""
    options = options or ScanOptions()
    start = time.perf_counter()
    recipe_bands = detector.metadata.preprocessing.get("bands")
    bands = options.bands or (tuple(recipe_bands) if recipe_bands else None)
    with Scene(path, bands=bands, nodata=options.nodata) as scene:
        grid = TileGrid(scene.width, scene.height, tile_size(options, detector), options.overlap)
        radiometry = choose_radiometry(scene, options, detector)
        stitcher = Stitcher(options.stitch)
        skipped = 0
        progress = _progress(len(grid), scene.name) if on_tile is None else None
        tick = on_tile or progress.update  # type: ignore[union-attr]

        def readable() -> Iterator[TileData]:
            nonlocal skipped
            for tile in grid:
                data = scene.read(tile)
                if data.empty:
                    skipped += 1
                    tick(1)
                    continue
                yield data

        try:
            for batch in _batches(readable(), max(1, options.batch)):
                rgb = np.stack([radiometry.apply(t.data, t.nodata) for t in batch])
                for item, found in zip(batch, detector.detect(rgb, options.score_threshold)):
                    stitcher.add(item.tile, found)
                tick(len(batch))
        finally:
            if progress is not None:
                progress.close()
        return ScanResult(
            scene=scene.name,
            detections=stitcher.finish(),
            crs=scene.crs,
            transform=scene.transform,
            tiles=len(grid),
            skipped=skipped,
            seconds=time.perf_counter() - start,
        )
