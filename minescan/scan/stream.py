"""The scan stream: reads -> render -> batches -> inference -> consumer, the one loop every scan runs.

:func:`run_stream` is the only scan loop in minescan: a single scene, a
multi-scene run, the Python API (:class:`~minescan.scan.scanner.Scanner`),
``minescan bench`` (which times this same stream) and the demo all go
through it.  Its stages are threads joined by bounded queues
(:mod:`minescan.scan.pipeline`):

1. the strip reader decodes block-aligned strips and renders each decoded piece
   to uint8 RGB in its threads, then cuts tiles (:mod:`minescan.raster.strips`);
2. non-empty tiles are stacked into batches; a tile row's end rides with the
   batch holding its last tile;
3. ``detector.concurrency`` inference calls run side by side, results in order;
   with a gate (:mod:`minescan.scan.gate`) each call first runs the classifier
   on the batch's tiles and drops the tiles it gates off (they end like
   nodata tiles: no detections, their row still ends);
4. the consumer takes each tile's detections and each finished tile row.

With a render stage (``render``: rendering on the GPU, ``scan --render gpu``) stages 1-3
change shape: the reader hands over each tile row's raw rows, and one stage
uploads and renders them, cuts the row's non-empty tiles into the stage's
batch buffer (device memory) and runs the detector on it where it lies
(:func:`device_batches`); the consumer is the same.

What happens to the detections is the consumer's business
(:class:`Consumer`): the stitcher (:class:`~minescan.scan.stitch.Stitcher`)
settles objects row by row into vector results; a raster (heatmap) consumer
plugs in the same way.  Memory is bounded by the queues: ``2 x batch`` tiles,
``concurrency + 1`` batches, two results.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from minescan.engine.detector import Detector
from minescan.errors import MinescanError
from minescan.model.detections import TileDetections
from minescan.raster.gdal_cache import scan_block_cache, scan_cache_bytes
from minescan.raster.buffers import Recycler
from minescan.raster.grid import Tile
from minescan.raster.scene import Scene
from minescan.raster.radiometry import Radiometry
from minescan.raster.strips import CutTile, RawRow, RenderedTile, RowEnd, StripReader
from minescan.scan.coverage import Coverage
from minescan.scan.gate import Gate
from minescan.scan.pipeline import StageClock, ordered_map, threaded
from minescan.scan.plan import ScanPlan

if TYPE_CHECKING:
    from minescan.raster.gpu_render import DeviceBatch

R = TypeVar("R")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)


class ScanCancelled(MinescanError):
    """The caller cancelled a scan (its ``cancel`` event was set); nothing was written."""


class Consumer(Protocol[R_co]):
    """Takes the stream's output in tile order and makes the scan's result."""

    def add(self, tile: Tile, detections: TileDetections) -> None:
        """One non-empty tile's detections (tile pixels)."""

    def row_done(self, row: RowEnd) -> None:
        """Every tile of tile row ``row.row`` has been added (empty ones were skipped)."""

    def finish(self) -> R_co:
        """The result, once every row is done."""


@dataclass(frozen=True)
class StreamStats(Generic[R]):
    """What one pass of the stream produced and took."""

    result: R
    tiles: int
    skipped: int  # tiles that were entirely nodata and never reached the model
    seconds: float
    gated: int = 0  # tiles the gate kept from the detector (not counted in skipped)
    gated_tiles: tuple[Tile, ...] = ()  # which, in grid order
    masked: int = 0  # tiles with data the quality mask kept from the detector (plan.skip; not counted in skipped)
    coverage: Coverage | None = None  # which cells held data, were nodata or never scanned


@dataclass(frozen=True)
class Batch:
    """Tiles rendered to uint8 RGB for one inference call, and the tile rows finished with them."""

    tiles: list[Tile]
    rgb: np.ndarray | None  # [len(tiles), size, size, 3]
    rows_done: list[RowEnd]
    nodata: list[np.ndarray] | None = None  # each tile's nodata mask, for consumers that take it (add_nodata)


def make_batches(items: Iterable[CutTile | RenderedTile | RowEnd], size: int) -> Iterator[Batch]:
    """Group non-empty tiles into batches of ``size``; a row's end rides with the batch holding its last tile.

    Each tile is cut straight into its slot of the batch's one contiguous uint8
    [n, size, size, 3] buffer (native, GIL released).  A tile known to hold data
    everywhere (:attr:`CutTile.clear`) gets a shared all-False nodata mask instead of one cut for it.
    """
    tiles: list[CutTile | RenderedTile] = []
    rows: list[RowEnd] = []
    clear_masks: dict[tuple[int, int], np.ndarray] = {}
    # Batch buffers are reused once nothing refers to them (minescan.raster.buffers): the batches in flight are
    # bounded by the stream's queues (concurrency + 1 queued, as many in inference, two results).
    buffers = Recycler(keep=8)

    def batch() -> Batch:
        first = tiles[0].tile
        full = buffers.take((size, first.height, first.width, 3))
        rgb = full if len(tiles) == size else full[: len(tiles)]
        masks = []
        for slot, item in enumerate(tiles):
            item.cut_into(rgb[slot])
            if getattr(item, "clear", False):
                shape = (item.tile.height, item.tile.width)
                if shape not in clear_masks:
                    clear_masks[shape] = np.zeros(shape, bool)
                    clear_masks[shape].flags.writeable = False
                masks.append(clear_masks[shape])
            else:
                masks.append(item.nodata)
        return Batch([t.tile for t in tiles], rgb, rows, masks)

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
            yield batch()
            tiles, rows = [], []
    if tiles:
        yield batch()
    elif rows:
        yield Batch([], None, rows, [])


class RenderStage(Protocol):
    """Renders raw tile rows and cuts their tiles into a batch somewhere else than the host's numpy arrays.

    :class:`~minescan.raster.gpu_render.GpuRender` (CUDA kernels, the batch in GPU memory) and
    its CPU twin :class:`~minescan.raster.gpu_render.HostRender`.  One batch buffer: a ``cut``
    overwrites the previous batch.
    """

    def render_rows(self, data: np.ndarray, nodata: np.ndarray | None, row_off: int) -> None: ...

    def cut(self, tiles: Sequence[Tile]) -> DeviceBatch: ...

    def synchronize(self) -> None: ...


class SkipMasked:
    """Drops the tiles the quality mask keeps from the detector (``plan.skip``) from the reader's output, counting them.

    A tile that is all nodata passes on (the batcher drops it as nodata, and it is counted so); a row's end always passes.
    """

    def __init__(self, skip: frozenset[tuple[int, int]]) -> None:
        self.skip, self.count = skip, 0

    def keeps(self, tile: Tile) -> bool:
        return (tile.row, tile.col) not in self.skip

    def __call__(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            if not isinstance(item, RowEnd) and not self.keeps(item.tile) and not item.empty:  # type: ignore[attr-defined]
                self.count += 1
                continue
            yield item


def device_batches(rows: Iterable[RawRow], stage: RenderStage, detector: Detector, size: int, threshold: float,
                   clock: StageClock, skip: SkipMasked | None = None) -> Iterator[tuple[Batch, list]]:
    """Each tile row rendered by ``stage``, its non-empty tiles cut into batches of ``size`` and detected from there.

    Cutting and inference alternate (the stage holds one batch), so this is one stage of the
    stream; the reader decodes the next rows meanwhile.  A row's end rides with its last batch
    (an empty one when all its tiles are nodata).  Rendering and cutting are timed as stage
    ``radiometry``.
    """
    detect_device = getattr(detector, "detect_device")
    for row in rows:
        kept = [t for t in row.tiles
                if not row.nodata[:, t.col_off : t.col_off + t.valid_width].all()]  # padding is nodata too
        if skip is not None and skip.skip:
            skip.count += sum(not skip.keeps(t) for t in kept)
            kept = [t for t in kept if skip.keeps(t)]
        if not kept:
            yield Batch([], None, [row.end]), []
            continue
        with clock.time("radiometry", len(row.tiles)):
            stage.render_rows(row.data, row.nodata if row.nodata.any() else None, row.top)
        for start in range(0, len(kept), size):
            chunk = kept[start : start + size]
            with clock.time("radiometry", 0):
                batch = stage.cut(chunk)
                stage.synchronize()  # the inference reads it on another stream
            with clock.time("inference", len(chunk)):
                found = detect_device(batch, threshold)
            yield Batch(chunk, None, [row.end] if start + size >= len(kept) else []), found


def screen(batch: Batch, gate: Gate, clock: StageClock) -> Batch:
    """``batch`` without the tiles ``gate`` keeps from the detector (their rows' ends stay)."""
    if batch.rgb is None:
        return batch
    with clock.time("gate", len(batch.tiles)):
        keep = gate.passes(batch.rgb, batch.tiles)
    return keep_tiles(batch, keep)


def keep_tiles(batch: Batch, keep: np.ndarray) -> Batch:
    """``batch`` with only the tiles where ``keep`` is True (its rows' ends stay)."""
    if batch.rgb is None or keep.all():
        return batch
    tiles = [t for t, k in zip(batch.tiles, keep) if k]
    nodata = [m for m, k in zip(batch.nodata, keep) if k] if batch.nodata else batch.nodata
    return Batch(tiles, batch.rgb[keep] if tiles else None, batch.rows_done, nodata)


def infer(batches: Iterable[Batch], detector: Detector, threshold: float, clock: StageClock,
          gate: Gate | None = None) -> Iterator[tuple[Batch, list]]:
    """Run the detector on each batch (screened by ``gate`` first), ``detector.concurrency`` batches at a time, results in order."""

    def run(batch: Batch) -> tuple[Batch, list]:
        if gate is not None:
            batch = screen(batch, gate, clock)
        if batch.rgb is None:
            return batch, []
        with clock.time("inference", len(batch.tiles)):
            return batch, detector.detect(batch.rgb, threshold)

    return ordered_map(run, batches, workers=detector.concurrency, name="infer")


def timed_reads(reader: Iterable[T], clock: StageClock) -> Iterator[T]:
    """The reader's items (tiles and row ends, or raw rows), timing the work of producing each as stage ``read``."""
    items = iter(reader)
    while True:
        with clock.time("read"):
            item = next(items, None)
        if item is None:
            return
        yield item


def consume(results: Iterable[tuple[Batch, list]], consumer: Consumer, clock: StageClock,
            tick: Callable[[int], None], cancel: threading.Event | None = None, coverage: Coverage | None = None) -> int:
    """Hand each batch's detections and finished rows to ``consumer``; return the tiles processed.

    ``tick`` gets the tiles just finished, nodata tiles included once their row
    ends; a set ``cancel`` stops the stream (every stage upstream stops too);
    ``coverage`` records each scanned tile's nodata (:mod:`minescan.scan.coverage`).
    """
    processed = 0
    seen: Counter[int] = Counter()  # non-empty tiles handled per tile row
    for batch, found in results:
        if cancel is not None and cancel.is_set():
            raise ScanCancelled("scan cancelled")
        with clock.time("stitch", len(batch.tiles)):
            masks = batch.nodata if hasattr(consumer, "add_nodata") and batch.nodata else None
            for index, (tile, detections) in enumerate(zip(batch.tiles, found)):
                if coverage is not None:
                    coverage.add(tile, batch.nodata[index] if batch.nodata else None)
                if masks is not None:
                    consumer.add_nodata(tile, masks[index])  # type: ignore[attr-defined]
                consumer.add(tile, detections)
                seen[tile.row] += 1
            for row in batch.rows_done:
                consumer.row_done(row)
        processed += len(batch.tiles)
        tick(len(batch.tiles) + sum(row.tiles - seen.pop(row.row, 0) for row in batch.rows_done))
    return processed


def gdal_cache_bytes(scene: Scene) -> int:
    """GDAL block cache for a scan of ``scene`` (:mod:`minescan.raster.gdal_cache`)."""
    return scan_cache_bytes(scene.width, len(scene.bands), np.dtype(scene.dtype).itemsize, scene.decode_block[0])


def run_stream(
    plan: ScanPlan,
    detector: Detector,
    consumer: Consumer[R],
    *,
    clock: StageClock | None = None,
    tick: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    gate: Gate | None = None,
    rows: tuple[int, int] | None = None,
    render: Callable[[Radiometry, str, int], RenderStage] | None = None,
) -> StreamStats[R]:
    """Scan the plan's scene through the stream into ``consumer`` (see the module docstring).

    ``tick`` is called with the number of tiles just finished; ``clock``
    collects per-stage busy times (``minescan bench``); ``cancel``, when set,
    stops the scan with :class:`ScanCancelled` within one batch; ``gate`` (a
    fresh :class:`~minescan.scan.gate.Gate`, one per scan: it counts) screens
    each batch before the detector; ``rows`` (tile rows ``[start, stop)``)
    scans only that part of the grid (:mod:`minescan.scan.split`), and the
    counts are the part's; ``render`` (a detector on the CUDA backend, no gate)
    makes the render stage for the scene, ``render(radiometry, dtype, bands)``:
    the reader then hands over raw tile rows, which that stage renders and cuts
    into batches the detector takes where they lie (:func:`device_batches`).
    """
    clock = clock or StageClock()
    tick = tick or (lambda n: None)
    start = time.perf_counter()
    skip = SkipMasked(plan.skip)
    coverage = Coverage(plan.width, plan.height)
    with plan.open_scene() as scene:
        grid = plan.grid
        with scan_block_cache(gdal_cache_bytes(scene)):
            if render is None:
                reader = StripReader(scene, grid, plan.read_threads, radiometry=plan.radiometry, clock=clock, rows=rows)
                reads = threaded(skip(timed_reads(reader, clock)), maxsize=2 * plan.batch, name="read")
                batches = threaded(make_batches(reads, plan.batch), maxsize=detector.concurrency + 1, name="batch")
                results = threaded(infer(batches, detector, plan.score_threshold, clock, gate), maxsize=2, name="infer")
                stages = (results, batches, reads)
            else:  # raw rows to the render stage, which renders, cuts and hands its batches to the detector
                reader = StripReader(scene, grid, plan.read_threads, clock=clock, rows=rows)
                raw = threaded(timed_reads(reader.raw_rows(), clock), maxsize=2, name="read")
                results = threaded(device_batches(raw, render(plan.radiometry, scene.dtype, len(scene.bands)), detector,
                                                  plan.batch, plan.score_threshold, clock, skip), maxsize=2, name="infer")
                stages = (results, raw)
            try:
                processed = consume(results, consumer, clock, tick, cancel, coverage)
            finally:
                # Stop every stage now, downstream first, also when the consumer raised or the scan was
                # cancelled (the exception's traceback would keep them alive): a service must not leak threads.
                for stage in stages:
                    stage.close()
    with clock.time("stitch", 0):
        result = consumer.finish()
    gated = gate.gated if gate is not None else 0
    gated_tiles = tuple(sorted(gate.gated_tiles, key=lambda t: (t.row, t.col))) if gate is not None else ()
    cols = grid.shape[1]
    tiles = len(grid) if rows is None else (min(rows[1], grid.shape[0]) - rows[0]) * cols
    coverage.not_scanned([t for t in grid if (t.row, t.col) in skip.skip] + list(gated_tiles))
    return StreamStats(result, tiles, tiles - processed - gated - skip.count, time.perf_counter() - start, gated, gated_tiles,
                       skip.count, coverage)
