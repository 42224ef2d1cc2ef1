"""The stream's consumer seam: a result of another kind plugs in without touching the stream."""

from __future__ import annotations

import numpy as np

from minescan import Scanner
from minescan.scan.stream import run_stream


class TileScores:
    """A raster consumer: the best detection score of each tile, NaN where the tile was never run (all nodata)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.scores = np.full(shape, np.nan)
        self.rows_done: list[int] = []

    def add(self, tile, detections) -> None:
        self.scores[tile.row, tile.col] = float(detections.scores.max()) if len(detections) else 0.0

    def row_done(self, row) -> None:
        self.rows_done.append(row.row)

    def finish(self) -> np.ndarray:
        return self.scores


def test_a_raster_consumer_gets_every_tile_in_order_through_the_same_stream(make_scene, square_model):
    path, truth = make_scene(width=1400, height=1100, objects=10, seed=31, tile=256, overlap=32, nodata_width=400)
    scanner = Scanner(square_model, bands=(3, 2, 1), tile=256, overlap=32)
    plan = scanner.plan(path)
    consumer = TileScores(plan.grid_shape)
    stats = run_stream(plan, scanner.detector, consumer)
    heat = stats.result
    rows, cols = plan.grid_shape
    assert consumer.rows_done == list(range(rows))
    # Tiles the stream skipped as nodata are exactly the NaN cells; every other tile was run once.
    assert int(np.isnan(heat).sum()) == stats.skipped > 0 and stats.tiles == rows * cols
    # Every truth object's centre lies in some tile that scored a detection.
    grid = list(plan.grid)
    for x0, y0, x1, y1 in truth.boxes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        holders = [t for t in grid if t.col_off <= cx < t.col_off + t.valid_width and t.row_off <= cy < t.row_off + t.valid_height]
        assert any(heat[t.row, t.col] >= 0.5 for t in holders)
    # The vector consumer on the same plan finds every object once: both ride the same stream.
    assert len(scanner.scan(plan).detections) == len(truth.boxes) == 10
