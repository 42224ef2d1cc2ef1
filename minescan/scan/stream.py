"""One scene, end to end: read and render tiles, detect, stitch.

:func:`scan_scene` is the product's main job; the command line only parses
flags around it.  Settings resolve in this order: explicit option, the
model's own metadata (bands, gain, offset it was trained with; whether its
classes' parts are dropped), built-in default.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import rasterio

from minescan.engine import Detector
from minescan.engine.onnxruntime_backend import available_cores
from minescan.raster.grid import Tile, TileGrid, TileGridError
from minescan.raster.radiometry import Radiometry, passthrough, percentile_stretch, reflectance_gain
from minescan.scan.pipeline import StageClock, ordered_map, threaded
from minescan.raster.scene import Scene
from minescan.raster.strips import RenderedTile, RowEnd, StripReader
from minescan.scan.stitch import SceneDetections, StitchSettings, Stitcher

DEFAULT_TILE = 640
DEFAULT_OVERLAP = 128


def default_read_threads() -> int:
    """Reader threads: two per core, at most 8.

    More threads than cores keep a core decoding while another thread waits on
    the file or on its turn: measured on 2 cores, full 10980 px scene, a model
    that costs nothing, runs alternating: 2 threads 2.22-2.45 s, 4 threads
    1.97-2.22 s; with the demo Faster R-CNN the same within noise (6.1-6.6 s).
    Above 2 cores the formula is not measured here.
    """
    return min(8, 2 * available_cores())


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
    read_threads: int = field(default_factory=default_read_threads)


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
    recipe = detector.metadata.recipe
    gain = options.gain if options.gain is not None else (recipe.gain or 2.5)
    offset = options.offset if options.offset is not None else (recipe.offset or 0.0)
    scale = recipe.scale or 10000.0
    return reflectance_gain(len(scene.bands), gain=gain, offset=offset, scale=scale)


def stitch_settings(options: ScanOptions, detector: Detector) -> StitchSettings:
    """The scan's stitching rule: ``drop_parts`` from the options, else from the model's metadata (else off)."""
    if options.stitch.drop_parts is not None:
        return options.stitch
    # parse_metadata has already checked the recorded share is in [0, 1].
    return dataclasses.replace(options.stitch, drop_parts=detector.metadata.postprocessing.drop_parts or 0.0)


@dataclass(frozen=True)
class Batch:
    """Tiles rendered to uint8 RGB for one inference call, and the tile rows finished with them."""

    tiles: list[Tile]
    rgb: np.ndarray | None  # [len(tiles), size, size, 3]
    rows_done: list[RowEnd]


def make_batches(items: Iterable[RenderedTile | RowEnd], size: int) -> Iterator[Batch]:
    """Group non-empty tiles into batches of ``size``; a row's end rides with the batch holding its last tile."""
    tiles: list[RenderedTile] = []  # their pixels are stacked into the batch, then only their places are kept
    rows: list[RowEnd] = []
    for item in items:
        if isinstance(item, RowEnd):
            rows.append(item)
            if not tiles:
                yield Batch([], None, rows)
                rows = []
            continue
        if item.empty:
            continue
        tiles.append(item)
        if len(tiles) == size:
            yield Batch([t.tile for t in tiles], np.stack([t.rgb for t in tiles]), rows)
            tiles, rows = [], []
    if tiles or rows:
        yield Batch([t.tile for t in tiles], np.stack([t.rgb for t in tiles]) if tiles else None, rows)


def infer(batches: Iterable[Batch], detector: Detector, threshold: float, clock: StageClock) -> Iterator[tuple[Batch, list]]:
    """Run the detector on each batch, ``detector.concurrency`` batches at a time, results in order."""

    def run(batch: Batch) -> tuple[Batch, list]:
        if batch.rgb is None:
            return batch, []
        with clock.time("inference", len(batch.tiles)):
            return batch, detector.detect(batch.rgb, threshold)

    return ordered_map(run, batches, workers=detector.concurrency, name="infer")


def timed_reads(reader: StripReader, clock: StageClock) -> Iterator[RenderedTile | RowEnd]:
    """The reader's items, timing the work of producing each tile."""
    items = iter(reader)
    while True:
        with clock.time("read"):
            item = next(items, None)
        if item is None:
            return
        yield item


def gdal_cache_bytes(scene: Scene, size: int) -> int:
    """GDAL block cache for a scan: reads are block-aligned and decode each block once, so
    the cache only needs to hold the blocks of one strip in flight; more would just hold
    RAM (GDAL's default is 5% of it)."""
    block_rows = scene.block_shape[0]
    row_bytes = scene.width * len(scene.bands) * np.dtype(scene.dtype).itemsize
    return int(min(512 << 20, max(32 << 20, 2 * row_bytes * max(block_rows, 256))))


def _progress(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=label, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)


def scan_scene(
    path: str | Path,
    detector: Detector,
    options: ScanOptions | None = None,
    *,
    on_tile: Callable[[int], None] | None = None,
    clock: StageClock | None = None,
) -> ScanResult:
    """Scan one scene through the pipeline read and render (in the reader threads) -> batch -> infer -> stitch.

    ``on_tile`` (if given) is called with the number of tiles just finished,
    instead of drawing a progress bar; ``clock`` collects per-stage busy times.
    """
    options = options or ScanOptions()
    clock = clock or StageClock()
    start = time.perf_counter()
    bands = options.bands or detector.metadata.recipe.bands
    with Scene(path, bands=bands, nodata=options.nodata) as scene:
        grid = TileGrid(scene.width, scene.height, tile_size(options, detector), options.overlap)
        radiometry = choose_radiometry(scene, options, detector)
        stitcher = Stitcher(stitch_settings(options, detector))
        batch = max(1, options.batch)
        processed = 0
        seen: Counter[int] = Counter()  # non-empty tiles handled per tile row
        progress = _progress(len(grid), scene.name) if on_tile is None else None
        tick = on_tile or progress.update  # type: ignore[union-attr]
        try:
            with rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(scene, grid.size) >> 20):
                reader = StripReader(scene, grid, options.read_threads, radiometry=radiometry, clock=clock)
                reads = threaded(timed_reads(reader, clock), maxsize=2 * batch, name="read")
                batches = threaded(make_batches(reads, batch), maxsize=detector.concurrency + 1, name="batch")
                for item, found in threaded(infer(batches, detector, options.score_threshold, clock), maxsize=2, name="infer"):
                    with clock.time("stitch", len(item.tiles)):
                        for tile, detections in zip(item.tiles, found):
                            stitcher.add(tile, detections)
                            seen[tile.row] += 1
                        for row in item.rows_done:
                            stitcher.flush(np.inf if row.next_top is None else row.next_top)
                    processed += len(item.tiles)
                    # Tiles skipped as nodata are counted when their row ends.
                    tick(len(item.tiles) + sum(row.tiles - seen.pop(row.row, 0) for row in item.rows_done))
        finally:
            if progress is not None:
                progress.close()
        with clock.time("stitch", 0):
            detections = stitcher.finish()
        return ScanResult(
            scene=scene.name,
            detections=detections,
            crs=scene.crs,
            transform=scene.transform,
            tiles=len(grid),
            skipped=len(grid) - processed,
            seconds=time.perf_counter() - start,
        )
