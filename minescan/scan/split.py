"""One scene split into bands of tile rows, scanned apart and stitched as one.

A scene too large for one worker is cut into :class:`RowSpan` parts: each
part is the grid's tile rows ``[start, stop)``, all columns.  A worker scans
its part through the ordinary stream (:func:`~minescan.scan.stream.run_stream`
with ``rows``), reading only the decode blocks its tiles cover, and records
each tile's detections (tile pixels) instead of stitching them
(:class:`Recorder`).  The driver hands every part's tiles, in grid order, to
one :class:`~minescan.scan.stitch.Stitcher`, ending each tile row as the
stream does (:func:`stitch_parts`).

Invariants:

* every tile of the grid belongs to exactly one part (:func:`split_rows`);
  parts meet on tile rows, not pixels, so the overlap between two tile rows
  is read by both parts (each tile is whole) and stitched once on the driver;
* the plan (bands, radiometry, the domain-shift guard) is resolved once, for
  the whole scene, before it is split: every part renders pixels exactly as
  a single-process scan does, so the tiles, their detections and the
  stitched objects are the same (``tests/test_ray.py`` compares them on the
  known-answer scene);
* a part's counts (tiles, nodata, gated) add up to the scene's.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from minescan.errors import MinescanError
from minescan.model.detections import TileDetections
from minescan.raster.grid import Tile
from minescan.raster.strips import RowEnd
from minescan.scan.plan import ScanPlan
from minescan.scan.stitch import Stitcher


class SplitError(MinescanError):
    """Parts that do not make up their scene (missing, overlapping, or of another plan)."""


@dataclass(frozen=True)
class RowSpan:
    """Tile rows ``[start, stop)`` of a scene's grid."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise SplitError(f"tile rows [{self.start}, {self.stop}) are empty or negative")

    def __len__(self) -> int:
        return self.stop - self.start

    def describe(self) -> str:
        return f"tile rows {self.start}-{self.stop - 1}"


def split_rows(rows: int, per_part: int) -> list[RowSpan]:
    """The grid's ``rows`` tile rows in parts of ``per_part`` rows (the last may be shorter), top to bottom."""
    if rows < 1 or per_part < 1:
        raise SplitError(f"cannot split {rows} tile rows into parts of {per_part}")
    return [RowSpan(r, min(rows, r + per_part)) for r in range(0, rows, per_part)]


def rows_per_part(grid_shape: tuple[int, int], max_tiles: int) -> int:
    """Tile rows per part so that no part holds more than ``max_tiles`` tiles (at least one row), parts of even size."""
    rows, cols = grid_shape
    parts = max(1, math.ceil(rows * cols / max(1, max_tiles)))
    return max(1, math.ceil(rows / parts))


@dataclass(frozen=True)
class TileRecord:
    """One tile that reached the detector, and what it found there (tile pixels)."""

    tile: Tile
    detections: TileDetections


@dataclass(frozen=True)
class PartResult:
    """What scanning one part of a scene produced: its detected tiles in grid order, and its counts."""

    span: RowSpan
    records: tuple[TileRecord, ...]
    tiles: int
    skipped: int  # tiles entirely nodata
    gated: int  # tiles the classifier gate kept from the detector
    gated_tiles: tuple[Tile, ...]
    seconds: float
    masked: int = 0  # tiles the quality mask kept from the detector
    coverage: Any = None  # the part's minescan.scan.coverage.Coverage


class Recorder:
    """A stream consumer (:class:`~minescan.scan.stream.Consumer`) that keeps each tile's detections unstitched."""

    def __init__(self) -> None:
        self.records: list[TileRecord] = []

    def add(self, tile: Tile, detections: TileDetections) -> None:
        self.records.append(TileRecord(tile, detections))

    def row_done(self, row: RowEnd) -> None:
        pass

    def finish(self) -> tuple[TileRecord, ...]:
        return tuple(self.records)


def scan_part(plan: ScanPlan, detector, span: RowSpan, *, gate=None, tick: Callable[[int], None] | None = None,
              cancel: threading.Event | None = None) -> PartResult:
    """Scan tile rows ``span`` of ``plan``'s scene with ``detector`` (and ``gate``, a fresh
    :class:`~minescan.scan.gate.Gate`), recording each tile's detections."""
    from minescan.scan.stream import run_stream

    if plan.model.task != "detector":
        raise SplitError(f"{plan.source.product_id}: only a detector's scan can be split; a classifier's heatmap "
                         "is scanned whole")
    if span.stop > plan.grid_shape[0]:
        raise SplitError(f"{plan.source.product_id}: {span.describe()} lie outside its {plan.grid_shape[0]} tile rows")
    stats = run_stream(plan, detector, Recorder(), tick=tick, cancel=cancel, gate=gate, rows=(span.start, span.stop))
    return PartResult(span, stats.result, stats.tiles, stats.skipped, stats.gated, stats.gated_tiles, stats.seconds,
                      stats.masked, stats.coverage)


def stitch_parts(plan: ScanPlan, parts: Iterable[PartResult]):
    """The scene's :class:`~minescan.scan.scanner.ScanResult` from all its parts (any order), stitched as one scan.

    Raises :class:`SplitError` unless the parts cover every tile row exactly once.
    """
    from minescan.scan.scanner import ScanResult

    ordered = sorted(parts, key=lambda p: p.span.start)
    rows, cols = plan.grid_shape
    covered = [row for p in ordered for row in range(p.span.start, p.span.stop)]
    if covered != list(range(rows)):
        raise SplitError(f"{plan.source.product_id}: the parts cover tile rows {_ranges(covered)}, not 0-{rows - 1} once each")
    row_tops = plan.grid.row_starts
    stitcher = Stitcher(plan.stitch)
    by_row: dict[int, list[TileRecord]] = {}
    for part in ordered:
        for record in part.records:
            by_row.setdefault(record.tile.row, []).append(record)
    for row in range(rows):
        for record in sorted(by_row.get(row, ()), key=lambda r: r.tile.col):
            stitcher.add(record.tile, record.detections)
        stitcher.row_done(RowEnd(row, cols, row_tops[row + 1] if row + 1 < rows else None))
    gated_tiles = tuple(t for p in ordered for t in p.gated_tiles)
    coverage = None
    for part in ordered:
        if part.coverage is not None:
            if coverage is None:
                coverage = part.coverage
            else:
                coverage.merge(part.coverage)
    from minescan.scan.assess import assess

    return assess(ScanResult(
        scene=plan.scene_name,
        detections=stitcher.finish(), labels=plan.labels, crs=plan.crs, transform=plan.transform,
        tiles=sum(p.tiles for p in ordered), skipped=sum(p.skipped for p in ordered),
        seconds=sum(p.seconds for p in ordered), plan=plan, gated=sum(p.gated for p in ordered), gated_tiles=gated_tiles,
    ), sum(p.masked for p in ordered), coverage)


def _ranges(rows: list[int]) -> str:
    return ", ".join(str(r) for r in rows[:12]) + (", ..." if len(rows) > 12 else "") if rows else "none"
