"""Stitching against truth on many random layouts with noisy, model-like boxes (minescan.scan.stitch).

Each layout draws a grid (tile 256-640 px, overlap 32-128 px) over a scene of
up to five tiles a side, and objects at least 9 px apart from 10 px to four
tiles across, many placed with an edge a few pixels from a tile edge (slivers, cut
boxes that look whole).  Every tile reports the part of every object it sees,
each edge moved by an independent amount of up to the object's noise
(:func:`testkit.noisy.jitter`: clipped to the tile, so an edge on the tile edge
moves inward only), with a random score; the stitcher is fed exactly as a scan
feeds it (tiles in grid order, ``row_done`` after each tile row, ``finish``).

The claim checked: every object is reported exactly once, with the right class
and every edge within its noise of the truth, and nothing else is reported.
The noise is 4 px on every edge, less only for objects whose smaller side is
under 36 px, where it is a ninth of that side: two tiles seeing such an object
whole are told apart from two objects by IoU alone (see the module docstring's
limits).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from minescan.model.detections import TileDetections
from minescan.raster.grid import TileGrid
from minescan.raster.strips import RowEnd
from minescan.scan.stitch import StitchSettings, Stitcher
from testkit.noisy import jitter

NOISE = 4.0  # px per edge, at most
GAP = 9  # px between objects: more than two noisy edges (2 x 4 px) can close


def layout(seed: int, objects: int = 40, max_tiles: int = 5, *, size: int | None = None, overlap: int | None = None,
           tiles: int | None = None):
    """(grid, boxes [M, 4], classes [M]) of one random layout (``size``, ``overlap``, ``tiles`` a side: fixed if given)."""
    rng = np.random.default_rng(seed)
    size = size or int(rng.integers(256, 641))
    overlap = overlap or int(rng.integers(32, 129))
    stride = size - overlap
    if tiles:
        width = height = size + (tiles - 1) * stride
    else:
        width, height = (int(rng.integers(size, size + (max_tiles - 1) * stride + 1)) for _ in range(2))
    grid = TileGrid(width, height, size, overlap)
    cuts_x = sorted({s for s in grid.col_starts[1:]} | {s + size for s in grid.col_starts[:-1]})
    cuts_y = sorted({s for s in grid.row_starts[1:]} | {s + size for s in grid.row_starts[:-1]})
    taken = np.zeros((height, width), bool)
    boxes, classes = [], []
    for attempt in range(objects * 30):
        if len(boxes) == objects:
            break
        # Sizes log-uniform from 10 px to four tiles.
        w, h = (int(np.exp(rng.uniform(np.log(10), np.log(4 * size)))) for _ in range(2))
        w, h = min(w, width), min(h, height)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        kind = attempt % 4  # an edge a few px off a tile edge: 1 in x, 2 in y, 3 both
        if kind in (1, 3) and cuts_x:
            line = int(rng.choice(cuts_x)) + int(rng.integers(-6, 7))
            x = line if rng.random() < 0.5 else line - w
        if kind in (2, 3) and cuts_y:
            line = int(rng.choice(cuts_y)) + int(rng.integers(-6, 7))
            y = line if rng.random() < 0.5 else line - h
        if x < 0 or y < 0 or x + w > width or y + h > height:
            continue
        if taken[max(0, y - GAP) : y + h + GAP, max(0, x - GAP) : x + w + GAP].any():
            continue
        taken[y : y + h, x : x + w] = True
        boxes.append((x, y, x + w, y + h))
        classes.append(int(rng.integers(1, 3)))
    return grid, np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int32)


def object_noise(boxes: np.ndarray, noise: float = NOISE) -> np.ndarray:
    """Each object's noise amplitude: ``noise``, or a ninth of its smaller side below 9 x ``noise``."""
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return np.minimum(noise, side / 9.0)


def tile_reports(grid: TileGrid, boxes: np.ndarray, classes: np.ndarray, noise: np.ndarray, seed: int):
    """(tile, TileDetections) per tile in grid order: the clipped, jittered part of every object the tile sees."""
    rng = np.random.default_rng(seed)
    for tile in grid:
        origin = np.array([tile.col_off, tile.row_off] * 2, np.float64)
        part = np.concatenate([np.maximum(boxes[:, :2], origin[:2]),
                               np.minimum(boxes[:, 2:], origin[:2] + [tile.valid_width, tile.valid_height])], axis=1)
        seen = (part[:, 2] > part[:, 0]) & (part[:, 3] > part[:, 1])
        local, kept = jitter(part[seen] - origin, noise[seen], rng, tile.valid_width, tile.valid_height)
        n = len(local)
        yield tile, TileDetections(local, rng.uniform(0.3, 1.0, n).astype(np.float32), classes[seen][kept])


def stitch_as_a_scan(grid: TileGrid, reports, settings: StitchSettings | None = None):
    """Feed the stitcher as the scan's stream does: tiles in order, each tile row's end, then finish."""
    stitcher = Stitcher(settings)
    rows, cols = grid.shape
    starts = grid.row_starts
    for tile, detections in reports:
        if len(detections):
            stitcher.add(tile, detections)
        if tile.col == cols - 1:
            stitcher.row_done(RowEnd(tile.row, cols, starts[tile.row + 1] if tile.row + 1 < rows else None))
    return stitcher.finish()


def check(truth: np.ndarray, classes: np.ndarray, noise: np.ndarray, found) -> tuple[list[str], float]:
    """(problems, worst edge error of the matched objects): each truth object once, within its noise, nothing else."""
    problems = []
    error = np.abs(found.boxes[:, None, :] - truth[None, :, :]).max(axis=2)  # [found, truth]
    close = (error <= noise[None, :] + 1e-6) & (found.classes[:, None] == classes[None, :])
    for t in np.flatnonzero(close.sum(axis=0) != 1):
        problems.append(f"object {truth[t].tolist()} class {classes[t]} reported {close[:, t].sum()} times: "
                        f"{found.boxes[close[:, t]].tolist() or found.boxes[error[:, t] < 50].tolist()}")
    for f in np.flatnonzero(close.sum(axis=1) == 0):
        problems.append(f"false positive {found.boxes[f].tolist()} class {found.classes[f]}")
    return problems, float(error[close].max()) if close.any() else 0.0


LAYOUTS = 60


def test_random_layouts_with_noisy_boxes_give_every_object_once_within_its_noise():
    objects, worst, failures, start = 0, 0.0, [], time.perf_counter()
    large = 0
    for seed in range(LAYOUTS):
        grid, boxes, classes = layout(seed)
        noise = object_noise(boxes)
        found = stitch_as_a_scan(grid, tile_reports(grid, boxes, classes, noise, seed + 1000))
        problems, error = check(boxes, classes, noise, found)
        failures += [f"layout {seed} (tile {grid.size}, overlap {grid.overlap}, {grid.width} x {grid.height}): {p}" for p in problems]
        objects += len(boxes)
        large += int((np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) > grid.overlap).sum())
        worst = max(worst, error)
    seconds = time.perf_counter() - start
    print(f"{LAYOUTS} layouts, {objects} objects ({large} larger than the overlap), worst edge error {worst:.2f} px, {seconds:.1f} s")
    assert not failures, "\n".join(failures[:20])
    assert objects >= 30 * LAYOUTS and worst <= NOISE


@pytest.mark.parametrize("agnostic", [False, True])
def test_class_agnostic_stitching_of_noisy_layouts_with_one_class(agnostic):
    # One class: the class-agnostic rule must give the same objects as the per-class one.
    for seed in range(100, 110):
        grid, boxes, _ = layout(seed, objects=30)
        classes = np.ones(len(boxes), np.int32)
        noise = object_noise(boxes)
        found = stitch_as_a_scan(grid, tile_reports(grid, boxes, classes, noise, seed), StitchSettings(class_agnostic=agnostic))
        problems, _ = check(boxes, classes, noise, found)
        assert not problems, f"layout {seed}: " + "\n".join(problems)


def test_a_full_scenes_load_stitches_in_well_under_a_second():
    # A full scene's load: 22 x 22 tiles (a 10980 px scene has 22 x 22 tiles of 640 px), ~1000 objects, ~3000 boxes.
    grid, boxes, classes = layout(7, objects=1000, size=256, overlap=64, tiles=22)
    noise = object_noise(boxes)
    reports = list(tile_reports(grid, boxes, classes, noise, 7))
    start = time.perf_counter()
    found = stitch_as_a_scan(grid, reports)
    seconds = time.perf_counter() - start
    problems, _ = check(boxes, classes, noise, found)
    print(f"{len(grid)} tiles, {sum(len(d) for _, d in reports)} boxes, {len(boxes)} objects: {seconds:.3f} s")
    assert not problems, "\n".join(problems[:20])
    assert seconds < 5.0


def test_settling_row_by_row_gives_the_global_result_and_holds_only_unfinished_objects():
    # The scan settles objects after each tile row; that must change nothing, and what stays pending
    # after a row must belong to objects reaching to within twice the edge tolerance (+ noise) of the next row.
    tolerance = StitchSettings().edge_tolerance
    for seed in range(200, 210):
        grid, boxes, classes = layout(seed)
        noise = object_noise(boxes)
        reports = list(tile_reports(grid, boxes, classes, noise, seed))
        whole = Stitcher()
        for tile, detections in reports:
            whole.add(tile, detections)
        at_once = whole.finish()
        stitcher, (rows, cols) = Stitcher(), grid.shape
        for tile, detections in reports:
            stitcher.add(tile, detections)
            if tile.col == cols - 1 and tile.row + 1 < rows:
                top = grid.row_starts[tile.row + 1]
                stitcher.row_done(RowEnd(tile.row, cols, top))
                held = np.concatenate(stitcher._pending["boxes"]).reshape(-1, 4)
                inside = (held[:, None, :2] >= boxes[None, :, :2] - noise[None, :, None] - 1e-9).all(axis=2) & (
                    held[:, None, 2:] <= boxes[None, :, 2:] + noise[None, :, None] + 1e-9).all(axis=2)
                reach = np.where(inside, boxes[None, :, 3] + noise[None, :], -np.inf).max(axis=1)
                assert (reach + 2 * tolerance >= top).all(), f"layout {seed}: a finished object held after row {tile.row}"
        stitcher.row_done(RowEnd(rows - 1, cols, None))
        by_rows = stitcher.finish()
        key = lambda d: sorted(zip(map(tuple, d.boxes.tolist()), d.classes.tolist()))  # noqa: E731
        assert key(by_rows) == key(at_once), f"layout {seed}"
