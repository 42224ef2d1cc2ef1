"""``minescan bench``: where a scan's time goes, measured in one run.

For each setting (batch size x ONNX Runtime threads per call x concurrent
calls) it runs, on the same scene and the same tiles (a tile classifier's
*windows*, every ``stride`` px):

1. *read only*: the strip reader alone; then a second read that renders as a
   scan does (in the reader threads), rendering timed as its own stage (busy
   time over the threads), the tiles kept as uint8 in a
   temporary memory-mapped file (on disk, so memory stays bounded) for the
   passes that follow;
2. *model only*: the model alone on those tiles, in the same batches and
   with the same concurrent calls: the floor no scan of these tiles can beat;
3. *stitch only*: the stitcher alone on the detections of pass 2; for a
   classifier *accumulate only*: the heatmap consumer blending the
   probabilities of pass 2 into the cell grid, with each window's nodata mask
   (kept from pass 1 next to the tiles), as a scan does;
   With a classifier gate (``--gate``), the gate alone first scores every
   tile (stage ``gate``), and the model-only pass runs the detector on the
   tiles it passes, as the scan does;
4. *pipeline*: a real scan and the result written from it (a GeoPackage; a
   classifier's heatmap COG), with per-stage busy times, peak RSS and the CPU
   time of all its threads.  An empty GeoPackage is written first, untimed: the
   first write in a process loads the writer's libraries (0.3-0.45 s), which a
   run of many scenes pays once.

Efficiency is the pipeline's wall time over the slowest stage measured
alone: 1.0 means every other stage hid completely behind the slowest.

Once per bench, after the settings (so the files are in the page cache for
it as for them): the scene's *decode-once floor*
(:func:`~minescan.raster.decoding.decode_floor`): each band the scan reads,
read once in whole decode blocks on the reader's threads and nothing else.  No
scan can be faster; a cheap model's pipeline over it says what reading,
rendering and cutting tiles cost on top of decoding.
A classifier's figures count windows where a detector's count tiles
(``windows``, ``windows_per_s`` in the JSON); a detector's output is as it
always was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from minescan.defaults import available_cores
from minescan.engine.detector import Detector
from minescan.raster.decoding import DecodeFloor, decode_floor
from minescan.raster.gdal_cache import scan_block_cache
from minescan.raster.scene import Scene
from minescan.raster.strips import RenderedTile, RowEnd, StripReader
from minescan.scan.heatmap import HeatmapConsumer, HeatmapLayout
from minescan.scan.pipeline import StageClock, ordered_map
from minescan.scan.plan import ScanOptions, ScanPlan
from minescan.scan.scanner import Scanner
from minescan.results.atomic import write_atomically
from minescan.scan.stitch import Stitcher
from minescan.scan.stream import consume, gdal_cache_bytes, infer, keep_tiles, make_batches, timed_reads

STAGES = ("read", "radiometry", "inference", "stitch", "write")
CLASSIFIER_STAGES = ("read", "radiometry", "inference", "accumulate", "write")
# The stream's clock calls its consumer stage "stitch" whatever the consumer (minescan.scan.stream.consume).
_CLOCK_STAGE = {"accumulate": "stitch"}


def stages(task: str) -> tuple[str, ...]:
    """The stages reported for a model of ``task`` ("detector" or "classifier")."""
    return CLASSIFIER_STAGES if task == "classifier" else STAGES


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Restart the peak RSS count from the current RSS (Linux >= 4.0; harmless elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def warm_up(detector: Detector, batch: int, size: int) -> None:
    """Run one full batch on each of the model's concurrent calls, outside any clock (a classifier's ``detect`` too).

    ONNX Runtime grows its memory on the first call of each shape and concurrency; a
    single batch-1 warm-up left that growth inside the first timed pass (a model-only
    floor measured 28-48% too slow).
    """
    batches = [np.zeros((batch, size, size, 3), np.uint8)] * detector.concurrency
    for _ in ordered_map(detector.detect, batches, workers=detector.concurrency, name="warm-up"):
        pass


@dataclass(frozen=True)
class StageTiming:
    """A stage's busy time: total and per tile (median and 95th percentile)."""

    total_s: float
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, clock: StageClock, stage: str) -> "StageTiming":
        per_tile = clock.per_tile(stage)
        if not per_tile:
            return cls(clock.total(stage), 0.0, 0.0)
        p50, p95 = np.percentile(per_tile, [50, 95]) * 1000
        return cls(clock.total(stage), float(p50), float(p95))


@dataclass(frozen=True)
class BenchResult:
    """One setting's figures."""

    batch: int
    threads: int | None  # intra-op threads per call (None: not an ONNX Runtime setting, e.g. TensorRT)
    workers: int  # concurrent inference calls
    tiles: int
    pipeline_s: float
    alone_s: dict[str, float]
    in_pipeline: dict[str, StageTiming]
    peak_rss_mb: float
    cpu_s: float  # CPU time of the whole process during the pipeline, all threads
    cores: int
    megapixels: float
    km2: float
    detections: int  # a classifier's: 0 (not reported)
    task: str = "detector"  # or "classifier": then ``tiles`` are windows
    stride: int | None = None  # classifier: px between windows (one heatmap cell)
    cells: tuple[int, int] | None = None  # classifier: (rows, cols) of the heatmap
    decode_floor_s: float | None = None  # the scene's decode-once floor (wall s), when measured
    gated: int = 0  # tiles a classifier gate kept from the detector in the pipeline

    @property
    def over_decode_floor(self) -> float | None:
        """Pipeline wall time over the decode-once floor (1.0 = the scan costs no more than decoding)."""
        return self.pipeline_s / self.decode_floor_s if self.decode_floor_s else None

    @property
    def unit(self) -> str:
        """What the scan runs the model on: "tiles", or a classifier's "windows"."""
        return "windows" if self.task == "classifier" else "tiles"

    @property
    def slowest(self) -> str:
        return max(self.alone_s, key=self.alone_s.__getitem__)

    @property
    def cpu_busy(self) -> float:
        """Share of the cores the pipeline kept busy."""
        return self.cpu_s / max(self.pipeline_s * self.cores, 1e-9)

    @property
    def efficiency(self) -> float:
        """Pipeline wall time over the slowest stage alone (1.0 = perfect overlap)."""
        return self.pipeline_s / max(self.alone_s[self.slowest], 1e-9)

    def as_dict(self) -> dict:
        """The figures for JSON: a detector's as they always were; a classifier's in windows, with its heatmap."""
        data = asdict(self)
        for key in ("task", "stride", "cells"):
            del data[key]
        if self.task == "classifier":
            del data["detections"]
            data = {"task": self.task, **{"windows" if key == "tiles" else key: value for key, value in data.items()}}
            data.update(stride=self.stride, heatmap_cells=list(self.cells or ()))
        if self.decode_floor_s is not None:
            data["pipeline_over_decode_floor"] = self.over_decode_floor
        data.update({"slowest_stage": self.slowest, "efficiency": self.efficiency, "cpu_busy": self.cpu_busy,
                     f"{self.unit}_per_s": self.tiles / self.pipeline_s, "mpx_per_s": self.megapixels / self.pipeline_s,
                     "km2_per_s": self.km2 / self.pipeline_s})
        return data


@dataclass
class _Tiles:
    """Rendered tiles of pass 1, memory-mapped, with their grid tiles and row ends in order.

    ``nodata``: each tile's nodata mask, memory-mapped too, for consumers that
    take it (a classifier's heatmap); None when no consumer needs it.
    """

    rgb: np.ndarray
    order: list = field(default_factory=list)  # Tile | RowEnd
    nodata: np.ndarray | None = None

    def items(self) -> Iterator[RenderedTile | RowEnd]:
        """The reader's items again, tiles out of the memory map (recently written: from the page cache)."""
        index = 0
        for item in self.order:
            if isinstance(item, RowEnd):
                yield item
                continue
            yield RenderedTile(item, self.rgb[index], _HAS_DATA if self.nodata is None else self.nodata[index])
            index += 1


_HAS_DATA = np.zeros((1, 1), bool)  # a nodata mask with no nodata, for tiles already known to hold data


def _read_only(plan: ScanPlan, scene: Scene, workdir: str, masks: bool = False) -> tuple[_Tiles, StageClock]:
    """Pass 1: the reader alone (timed), then a second read that renders (rendering timed).

    Two reads, because the strip reader decodes ahead in its own threads, and renders
    there too when asked: one pass could not tell reading from rendering.  ``masks``
    keeps each tile's nodata mask too (for a classifier's heatmap).
    """
    clock = StageClock()
    grid = plan.grid
    with scan_block_cache(gdal_cache_bytes(scene)):
        for _ in timed_reads(StripReader(scene, grid, plan.read_threads), clock):
            pass
        rgb = np.lib.format.open_memmap(os.path.join(workdir, "tiles.npy"), "w+", np.uint8, (len(grid), grid.size, grid.size, 3))
        nodata = (np.lib.format.open_memmap(os.path.join(workdir, "nodata.npy"), "w+", bool, (len(grid), grid.size, grid.size))
                  if masks else None)
        tiles = _Tiles(rgb, nodata=nodata)
        n = 0
        for item in StripReader(scene, grid, plan.read_threads, radiometry=plan.radiometry, clock=clock):
            if isinstance(item, RowEnd):
                tiles.order.append(item)
                continue
            if item.empty:
                continue
            item.cut_into(rgb[n])  # into the memory map (on disk); rendering was timed in the reader threads
            if nodata is not None:
                nodata[n] = item.nodata
            tiles.order.append(item.tile)
            n += 1
    tiles.rgb = rgb[:n]
    if nodata is not None:
        tiles.nodata = nodata[:n]
    return tiles, clock


def bench_setting(scene_path: str | Path, make_scanner: Callable[[], Scanner], batch: int, options: ScanOptions) -> BenchResult:
    """Measure one setting; ``make_scanner()`` loads the model with this setting's threads and workers.

    Every pass runs the scan stream's own stages (:mod:`minescan.scan.stream`):
    the reader, the batching and inference stages, the consumer stage (the
    stitcher, or a classifier's heatmap), and finally the whole stream as a
    scan runs it.
    """
    scanner = make_scanner()
    detector = scanner.detector
    plan = scanner.plan(scene_path, **options.merged(batch=batch).__dict__)
    classifier = scanner.model.task == "classifier"
    layout = heatmap_layout(plan) if classifier else None
    with plan.open_scene() as scene:
        grid = plan.grid
        area_km2 = scene.width * scene.height * abs(scene.transform.a * scene.transform.e) * 1e-6
        megapixels = scene.width * scene.height / 1e6
        with tempfile.TemporaryDirectory(prefix="minescan-bench-") as workdir:
            tiles, read_clock = _read_only(plan, scene, workdir, masks=classifier)
            warm_up(detector, min(batch, max(1, len(tiles.rgb))), grid.size)
            gate_wall, keeps = _gate_alone(scanner, plan, tiles, batch, detector.concurrency)
            batches = make_batches(tiles.items(), batch)
            if keeps is not None:
                batches = (keep_tiles(b, k) for b, k in zip(batches, keeps))
            # The floor is the wall time of the whole pass (busy times would sum over concurrent calls);
            # batches are stacked out of the memory map one at a time, so memory stays bounded.
            started = time.perf_counter()
            found = [
                (dataclasses.replace(b, rgb=None), d)
                for b, d in infer(batches, detector, plan.score_threshold, StageClock())
            ]
            model_wall = time.perf_counter() - started
            stitch_clock = StageClock()
            consumer = HeatmapConsumer(layout, heatmap_classes(scanner, plan)) if layout else Stitcher(plan.stitch)
            consume(found, consumer, stitch_clock, lambda n: None)
            with stitch_clock.time("stitch", 0):
                consumer.finish()
            del tiles, found
    names = stages(scanner.model.task) + (("gate",) if plan.gate is not None else ())
    alone = {
        "read": read_clock.total("read"),
        "radiometry": read_clock.total("radiometry"),
        "inference": model_wall,
        names[3]: stitch_clock.total("stitch"),
    } | ({"gate": gate_wall} if plan.gate is not None else {})
    if not classifier:
        _load_writer(plan)
    clock = StageClock()
    reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = scanner.scan(plan, clock=clock)
    with tempfile.TemporaryDirectory(prefix="minescan-bench-") as workdir, clock.time("write", 0):
        result.write(Path(workdir) / ("heatmap.tif" if classifier else "detections.gpkg"))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    alone["write"] = clock.total("write")  # the result is written once the scene is done, in both cases
    return BenchResult(
        batch=batch, threads=getattr(detector, "threads", None), workers=detector.concurrency, tiles=result.tiles, pipeline_s=wall,
        alone_s=alone, in_pipeline={s: StageTiming.of(clock, _CLOCK_STAGE.get(s, s)) for s in names},
        peak_rss_mb=peak_rss_bytes() / 2**20, cpu_s=cpu, cores=available_cores(), megapixels=megapixels, km2=area_km2,
        detections=0 if classifier else len(result.detections), task=scanner.model.task,
        stride=layout.stride if layout else None, cells=layout.shape if layout else None, gated=getattr(result, "gated", 0),
    )


def _load_writer(plan: ScanPlan) -> None:
    """Write an empty result once, untimed: the first write in a process loads the writer's libraries
    (pyogrio, GDAL's GeoPackage driver, shapely, pyproj), 0.3-0.45 s measured on 2 cores, which a
    run of many scenes pays once; the pipeline's write is then the scene's own."""
    from minescan.model.detections import SceneDetections
    from minescan.results.writers import write_detections

    with tempfile.TemporaryDirectory(prefix="minescan-bench-") as workdir:
        write_detections(Path(workdir) / "warm.gpkg", SceneDetections.empty(), transform=plan.transform, crs=plan.crs,
                         labels=plan.labels, scene="warm-up")


def _gate_alone(scanner: Scanner, plan: ScanPlan, tiles: _Tiles, batch: int, workers: int) -> tuple[float, list | None]:
    """With a gate: its wall time scoring every tile alone, and which tiles of each batch it passes; else (0, None)."""
    if plan.gate is None:
        return 0.0, None
    from minescan.scan.gate import Gate

    gate = Gate(scanner.gate, plan.gate)
    started = time.perf_counter()
    keeps = list(ordered_map(lambda b: gate.passes(b.rgb, b.tiles) if b.rgb is not None else np.zeros(0, bool),
                             make_batches(tiles.items(), batch), workers=workers, name="gate"))
    return time.perf_counter() - started, keeps


def measure_decode_floor(plan: ScanPlan) -> DecodeFloor:
    """The decode-once floor of the plan's scene: its chosen bands, its decode blocks, the plan's reader threads."""
    with plan.open_scene() as scene:
        dataset, bands, block = scene.dataset, tuple(scene.bands), scene.decode_block
    return decode_floor(dataset, bands, block, plan.read_threads)


def with_decode_floor(results: list[BenchResult], floor: DecodeFloor) -> list[BenchResult]:
    """The results with the floor's wall time recorded in each."""
    return [dataclasses.replace(r, decode_floor_s=floor.seconds) for r in results]


def format_decode_floor(floor: DecodeFloor, results: list[BenchResult]) -> str:
    """One line: the floor, what it read, and the fastest pipeline over it."""
    rows, cols = floor.block
    best = min(results, key=lambda r: r.pipeline_s) if results else None
    ratio = f"; fastest pipeline {best.pipeline_s:.2f} s = {best.over_decode_floor:.2f} x the floor" if best else ""
    return (f"decode-once floor: {floor.seconds:.2f} s wall, {floor.cpu_seconds:.1f} CPU-s (bands "
            f"{','.join(map(str, floor.bands))} each read once in {cols} x {rows} px decode blocks on {floor.threads} "
            f"thread(s), nothing else){ratio}")


def heatmap_layout(plan: ScanPlan) -> HeatmapLayout:
    """A classifier plan's windows and cells (the plan's tiles are the windows; overlap = window - stride)."""
    return HeatmapLayout(plan.width, plan.height, plan.tile, plan.tile - plan.overlap)


def heatmap_classes(scanner: Scanner, plan: ScanPlan) -> int:
    """Bands of a classifier's heatmap, as the scanner counts them."""
    return scanner.detector.signature.classes or len(plan.labels) or 1


def format_table(results: list[BenchResult]) -> str:
    """A readable table: one row per setting, then per-stage detail (a classifier's in windows, one setting's task)."""
    unit = results[0].unit if results else "tiles"
    one = unit[:-1]
    count, rate, per = max(6, len(unit)), max(8, len(unit) + 2), len(f"p50 ms/{one}") + 1
    lines = [
        f"batch threads workers {unit:>{count}}  wall s {unit + '/s':>{rate}}  Mpx/s  km2/s  slowest(alone)   efficiency  "
        "CPU busy  peak RSS MB",
    ]
    for r in results:
        lines.append(
            f"{r.batch:>5} {r.threads or '-':>7} {r.workers:>7} {r.tiles:>{count}} {r.pipeline_s:>7.2f} "
            f"{r.tiles / r.pipeline_s:>{rate}.1f} {r.megapixels / r.pipeline_s:>6.1f} {r.km2 / r.pipeline_s:>6.1f}  "
            f"{r.slowest + f' {r.alone_s[r.slowest]:.2f}s':<16} {r.efficiency:>10.2f}  {r.cpu_busy:>8.0%}  {r.peak_rss_mb:>11.0f}"
        )
    lines.append("")
    lines.append(f"stage        alone s | in pipeline: busy s  p50 ms/{one}  p95 ms/{one}   (batch, threads, workers)")
    for r in results:
        for stage in r.in_pipeline:
            t = r.in_pipeline[stage]
            lines.append(
                f"{stage:<11} {r.alone_s[stage]:>8.2f} | {t.total_s:>19.2f} {t.p50_ms:>{per}.2f} {t.p95_ms:>{per}.2f}   "
                f"({r.batch}, {r.threads or '-'}, {r.workers})"
            )
    lines.append("")
    lines.append("efficiency = pipeline wall / slowest stage alone (1.00 = every other stage hidden); "
                 "CPU busy = CPU time of the pipeline / (wall x cores): near 100% the scan is CPU-bound, "
                 "and the stages can only share the cores, not hide behind each other")
    gated = [r for r in results if "gate" in r.in_pipeline]
    if gated:
        lines.append("gate = the classifier scoring every tile; inference alone = the detector on the tiles it passes; "
                     + "; ".join(f"({r.batch}, {r.threads or '-'}, {r.workers}): {r.gated} of {r.tiles} tiles gated off"
                                 for r in gated))
    if unit == "windows":
        lines.append("accumulate = blending each window's probabilities into the heatmap's cells (a detector's stitch stage)")
    return "\n".join(lines)


def write_json(path: str | Path, results: list[BenchResult], scene: str, model: str, floor: DecodeFloor | None = None) -> None:
    """The figures for machines."""
    payload: dict = {"scene": str(scene), "model": str(model), "cpu_count": os.cpu_count(), "results": [r.as_dict() for r in results]}
    if floor is not None:
        payload["decode_floor"] = asdict(floor)
    write_atomically(path, json.dumps(payload, indent=2).encode())
