"""Render + cut: the native module against the numpy code it replaced, on one full-width strip.

    .venv/bin/python benchmarks/native_render.py            # -> prints the table; --md FILE writes it

A 10980 px wide strip of 1024 rows, 3 bands of uint16 Sentinel-2 DN (the
scan's common case), decoded pieces 512 px wide as the strip reader makes
them, 640 px tiles with 128 px overlap cut out of it into batches of 8:

- *numpy*: ``testkit/reference_render.py`` (the product's code before the
  native module): a table lookup per band into a strided view, the nodata
  assignment, a copy per tile, ``np.stack`` per batch;
- *native*: :meth:`Radiometry.render` per piece and
  :func:`~minescan.scan.stream.make_batches` cutting each tile straight into
  its batch.

Each piece is copied to a fresh buffer before it is rendered (untimed), as a
decoder hands it over (in cache); the render time is the busy time summed over
the rendering threads (divided by their count: wall time if they overlap
perfectly).  Then the tiles are cut into batches, each batch dropped when the
next is made, as the scan does.  One rendering thread, then two (the GIL
decides whether that pays).  Medians of ``--repeats`` runs, the same data for
both paths, the last batches checked equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import cpu_description  # noqa: E402
from minescan.raster.buffers import Recycler  # noqa: E402
from minescan.raster.grid import TileGrid  # noqa: E402
from minescan.raster.radiometry import reflectance_gain  # noqa: E402
from minescan.raster.strips import CutTile, _overlapping, _Piece  # noqa: E402
from minescan.scan.stream import make_batches  # noqa: E402
from testkit import reference_render  # noqa: E402

WIDTH, ROWS, PIECE, TILE, OVERLAP, BATCH = 10980, 1024, 512, 640, 128, 8


def _strip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4000, (3, ROWS, WIDTH), dtype=np.uint16)
    nodata = np.zeros((ROWS, WIDTH), bool)
    nodata[:, :700] = True  # a scene edge: some tiles partly nodata, as at an orbit's edge
    return data, nodata


def _windows() -> list[Window]:
    return [Window(c, 0, min(PIECE, WIDTH - c), ROWS) for c in range(0, WIDTH, PIECE)]


def _tiles() -> list:
    grid = TileGrid(WIDTH, ROWS, TILE, OVERLAP)
    return [t for t in grid if t.row_off + t.valid_height <= ROWS]  # the tile row(s) the strip holds whole


def _pieces(data: np.ndarray, nodata: np.ndarray) -> list[tuple[Window, np.ndarray, np.ndarray]]:
    out = []
    for w in _windows():
        c0, c1 = int(w.col_off), int(w.col_off + w.width)
        out.append((w, np.ascontiguousarray(data[:, :, c0:c1]), np.ascontiguousarray(nodata[:, c0:c1])))
    return out


def _render_timed(pieces, render, threads: int) -> tuple[list, float]:
    """Each piece copied to a fresh buffer (as a decoder hands it over: in cache), then rendered; render time summed."""

    def one(piece):
        window, data, mask = piece
        data, mask = data.copy(), mask.copy()
        start = time.perf_counter()
        out = render(window, data, mask)
        return out, time.perf_counter() - start

    with ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(one, pieces))
    return [d[0] for d in done], sum(d[1] for d in done) / threads


def numpy_path(pieces, radiometry, threads: int = 1) -> tuple[float, float, np.ndarray]:
    """(render s, cut + batch s, last batch)."""
    rendered, render_s = _render_timed(
        pieces, lambda w, d, m: (int(w.row_off), int(w.col_off), reference_render.render(radiometry, d, m), m), threads)
    start = time.perf_counter()
    last, waiting = None, []
    for tile in _tiles():
        rgb, mask = reference_render.cut(tile, rendered)
        if not mask.all():
            waiting.append(rgb)
        if len(waiting) == BATCH:
            last, waiting = reference_render.stack(waiting), []
    if waiting:
        last = reference_render.stack(waiting)
    return render_s, time.perf_counter() - start, last


_RENDERED = Recycler(keep=2 * len(_windows()))  # the rendered pieces reused from run to run, as the strip reader reuses them


def native_path(pieces, radiometry, threads: int = 1) -> tuple[float, float, np.ndarray]:
    def render(w: Window, d: np.ndarray, m: np.ndarray) -> _Piece:
        rgb, masked = radiometry.render(d, m, _RENDERED.take(d.shape[1:] + d.shape[:1]))
        return _Piece(w, rgb, m, masked)

    rendered, render_s = _render_timed(pieces, render, threads)
    start = time.perf_counter()
    last = None
    for batch in make_batches([CutTile(t, _overlapping(t, rendered)) for t in _tiles()], BATCH):
        last = batch.rgb
    return render_s, time.perf_counter() - start, last


def _median(fn, repeats: int) -> tuple[float, float]:
    runs = [fn()[:2] for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--md", help="also write the table here (Markdown)")
    args = parser.parse_args()
    data, nodata = _strip()
    pieces = _pieces(data, nodata)
    radiometry = reflectance_gain(3, offset=-1000)
    radiometry.apply(data[:, :2, :2])  # tables built once, outside the clock, for both paths
    np.testing.assert_array_equal(numpy_path(pieces, radiometry)[2], native_path(pieces, radiometry)[2])
    tiles = len(_tiles())
    rows = []
    for threads in (1, 2):
        slow = _median(lambda: numpy_path(pieces, radiometry, threads), args.repeats)
        fast = _median(lambda: native_path(pieces, radiometry, threads), args.repeats)
        rows.append(f"| {threads} | {slow[0] * 1000:.1f} + {slow[1] * 1000:.1f} | {fast[0] * 1000:.1f} + {fast[1] * 1000:.1f} | "
                    f"{slow[0] / fast[0]:.2f}x | {slow[1] / fast[1]:.2f}x | **{sum(slow) / sum(fast):.2f}x** |")
    table = "\n".join([
        f"Render + cut of one {WIDTH} x {ROWS} px strip (3 bands uint16, {tiles} tiles of {TILE} px, batches of {BATCH}), "
        f"median of {args.repeats}; {cpu_description()}; {time.strftime('%Y-%m-%d')}. Outputs identical (checked).",
        "",
        "| render threads | numpy ms (render + cut/batch) | native ms | render | cut + batch | stage |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
