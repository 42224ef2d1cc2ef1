"""Tiles cut from block-aligned strips: every compressed block decoded once.

Overlapping tile windows read one by one decode the same GeoTIFF blocks
again and again (a 640 px tile with 128 px overlap over 512 px blocks
touches up to nine blocks, most of them shared with neighbours).  Here the
scene is read top to bottom in full-width strips whose lower edge is rounded
up to the file's block rows, kept in a rolling buffer that drops rows once
no later tile needs them, and tiles are cut from memory.  Each strip is
split into block-aligned pieces read by a few threads, each with its own
dataset handle: rasterio releases the GIL while GDAL decodes.

Given a :class:`~minescan.raster.radiometry.Radiometry`, the reader threads
also render each decoded piece to the model's uint8 RGB right away, so every
pixel is rendered once (tiles overlap: rendering tile by tile renders 1.56
times the scene at 640/128 px) and on all reader threads, and the reader
yields :class:`RenderedTile` instead of :class:`TileData`.

The next two strips are decoded while the tiles of the current one are cut
(:data:`_AHEAD`), and each strip is split into many pieces (one decode block
wide: :func:`pieces`), so that no thread idles while another finishes a long
piece (measured on a 10980 px GeoTIFF, 2 threads, when a strip was split into
twice as many pieces as threads instead of one: 3.1 s -> 2.7 s).  Memory holds about one tile row plus three
strips of the chosen bands (rendered: uint8 RGB, half the bytes of uint16),
whatever the scene's height.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from minescan.defaults import available_cores
from minescan.raster.decoding import decoding_threads, gdal_threads
from minescan.scan.pipeline import StageClock
from minescan.raster.grid import Tile, TileGrid
from minescan.raster.radiometry import Radiometry
from minescan.raster.scene import Scene, TileData


MIN_PIECE = 512  # px: a tiled file's pieces are one decode block wide, but not narrower than this


def pieces(rows: tuple[int, int], width: int, block: tuple[int, int], parts: int) -> tuple[list[Window], bool]:
    """Split the full-width rows ``[r0, r1)`` into block-aligned windows.

    Tiled files split by columns, one decode block wide (whole blocks of at
    least :data:`MIN_PIECE` px where blocks are smaller), so the pieces balance
    across the reader threads whatever their count: measured on a full
    JPEG 2000 ``.SAFE`` (1024 px tiles, 4 threads, 2 cores), pieces two tiles
    wide read in 26.1-26.9 s, one tile wide 24.9-25.5 s, against the decode-once
    floor's 24.4 s; a 512 px-block GeoTIFF read the same either way.  Striped
    files (a block spans the width) split by rows into up to ``parts`` pieces.
    The flag says which (True = by columns).
    """
    r0, r1 = rows
    block_h, block_w = block
    if block_w < width:
        step = block_w * max(1, math.ceil(MIN_PIECE / block_w))
        return [Window(c, r0, min(step, width - c), r1 - r0) for c in range(0, width, step)], True
    step = max(block_h, math.ceil((r1 - r0) / parts / block_h) * block_h)
    return [Window(0, r, width, min(step, r1 - r)) for r in range(r0, r1, step)], False


# Strips decoding ahead of the one being cut.  With one, the threads idled at each strip's end while its last
# pieces finished (full JPEG 2000 .SAFE, reader alone: 28.3-29.4 s with one ahead, 26.1-26.9 s with two).
_AHEAD = 2


@dataclass(frozen=True)
class _Piece:
    """Pixels of one block-aligned window: decoded bands-first [B, h, w], or rendered uint8 [h, w, 3]."""

    window: Window
    data: np.ndarray
    nodata: np.ndarray


@dataclass(frozen=True)
class RenderedTile:
    """A tile as the model takes it: uint8 RGB [size, size, 3] (nodata pixels 0) and its nodata mask [size, size]."""

    tile: Tile
    rgb: np.ndarray
    nodata: np.ndarray

    @property
    def empty(self) -> bool:
        return bool(self.nodata.all())


def assemble(tile: Tile, pieces_: list[_Piece], bands: int, dtype: str) -> TileData:
    """Copy the tile's pixels out of the decoded pieces that cover it (one copy per pixel)."""
    data, nodata = _cut(tile, pieces_, (bands, tile.height, tile.width), dtype, channels_last=False)
    return TileData(tile, data, nodata)


def assemble_rendered(tile: Tile, pieces_: list[_Piece]) -> RenderedTile:
    """Copy the tile's RGB out of the rendered pieces that cover it; padding is nodata, black."""
    rgb, nodata = _cut(tile, pieces_, (tile.height, tile.width, 3), "uint8", channels_last=True)
    return RenderedTile(tile, rgb, nodata)


def _cut(tile: Tile, pieces_: list[_Piece], shape: tuple[int, int, int], dtype: str, *, channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """The tile's pixels [shape] and nodata mask, copied from the pieces (padding: zeros, nodata)."""
    covered = tile.valid_width == tile.width and tile.valid_height == tile.height  # pieces cover every pixel
    data = (np.empty if covered else np.zeros)(shape, dtype)
    nodata = (np.empty if covered else np.ones)((tile.height, tile.width), bool)
    x0, y0 = tile.col_off, tile.row_off
    x1, y1 = x0 + tile.valid_width, y0 + tile.valid_height
    for p in pieces_:
        px0, py0 = int(p.window.col_off), int(p.window.row_off)
        px1, py1 = px0 + int(p.window.width), py0 + int(p.window.height)
        cx0, cy0, cx1, cy1 = max(x0, px0), max(y0, py0), min(x1, px1), min(y1, py1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        rows, cols = slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0)
        if channels_last:
            data[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = p.data[rows, cols]
        else:
            data[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = p.data[:, rows, cols]
        nodata[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = p.nodata[rows, cols]
    return data, nodata


@dataclass(frozen=True)
class RowEnd:
    """Marks the end of tile row ``row`` (``tiles`` tiles); the next row starts at scene row ``next_top`` (None = last)."""

    row: int
    tiles: int
    next_top: int | None


class StripReader:
    """Yields the grid's tiles top to bottom, each tile row followed by a :class:`RowEnd`.

    Tiles are :class:`TileData` as read, or :class:`RenderedTile` when ``radiometry``
    is given; ``clock`` (if given) records the rendering's busy time as stage
    ``radiometry``, counted in tiles' worth of pixels.
    """

    def __init__(
        self,
        scene: Scene,
        grid: TileGrid,
        threads: int = 2,
        *,
        radiometry: Radiometry | None = None,
        clock: StageClock | None = None,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.scene = scene
        self.grid = grid
        self.rows = rows  # tile rows [start, stop) to read (a part of a split scene); None: all
        self.threads = max(1, threads)
        self.radiometry = radiometry
        self.clock = clock or StageClock()
        self.block = scene.decode_block
        # GDAL's own decoding threads per reader thread: together not more than the cores (minescan.raster.decoding).
        self.gdal_threads = gdal_threads(self.threads, available_cores())
        self._local = threading.local()
        self._handles: list = []
        self._lock = threading.Lock()

    def _handle(self):
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = self.scene.open_handle()
            with self._lock:
                self._handles.append(handle)
        return handle

    def _read_piece(self, window: Window) -> _Piece:
        with decoding_threads(self.gdal_threads):
            data, nodata = self.scene.read_window(window, self._handle())
        if self.radiometry is not None:
            with self.clock.time("radiometry", window.width * window.height / self.grid.size**2):
                data = self.radiometry.apply(data, nodata)
        return _Piece(window, data, nodata)

    def __iter__(self) -> Iterator[TileData | RenderedTile | RowEnd]:
        tiles_by_row: dict[int, list[Tile]] = {}
        first, stop = self.rows or (0, self.grid.shape[0])
        for tile in self.grid:
            if first <= tile.row < stop:
                tiles_by_row.setdefault(tile.row, []).append(tile)
        if not tiles_by_row:
            return
        height, width, bands = self.scene.height, self.scene.width, len(self.scene.bands)
        # Strip height: whole decode blocks and at least 1024 rows; pieces are cut on decode blocks
        # too.  The block a VRT reports (128 px) hides its sources' blocks: Sentinel-2 JP2 bands are
        # coded in 1024 px tiles, decoded again for every strip and piece that cuts one (measured on
        # a .SAFE scene: 256-row strips 17.2 s, 1024-row strips 4.2 s; pieces on the VRT's 128 px
        # grid 84.5 CPU-s, on the JP2 tiles 54.3: minescan.raster.decoding).
        strip = self.block[0] * max(1, math.ceil(1024 / self.block[0]))
        buffered: list[_Piece] = []
        ahead: deque[tuple[int, list[Future[_Piece]]]] = deque()  # (bottom row, pieces) of strips being decoded
        # A part of a split scene starts at the decode block holding its first tile row and ends with its last.
        rows = sorted(tiles_by_row)
        last = tiles_by_row[rows[-1]][0]
        bottom = min(height, math.ceil((last.row_off + last.valid_height) / self.block[0]) * self.block[0])
        submitted_to = tiles_by_row[rows[0]][0].row_off // self.block[0] * self.block[0]  # rows up to it are decoded or under way
        read_to = submitted_to  # rows up to it have been decoded
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="minescan-read") as pool:

                def submit_strip() -> None:
                    nonlocal submitted_to
                    upto = min(bottom, submitted_to + strip)
                    windows, _ = pieces((submitted_to, upto), width, self.block, 2 * self.threads)
                    ahead.append((upto, [pool.submit(self._read_piece, w) for w in windows]))
                    submitted_to = upto

                try:
                    for index, row in enumerate(rows):
                        tiles = tiles_by_row[row]
                        top, need = tiles[0].row_off, tiles[0].row_off + tiles[0].valid_height
                        buffered = [p for p in buffered if p.window.row_off + p.window.height > top]
                        while read_to < need:
                            if not ahead:
                                submit_strip()
                            read_to, futures = ahead.popleft()
                            buffered.extend(future.result() for future in futures)
                        # Decode the next strip while this row's tiles are cut and handed on: the
                        # reader threads would otherwise wait for the cutting (one strip more in memory).
                        while len(ahead) < _AHEAD and submitted_to < bottom:
                            submit_strip()
                        for tile in tiles:
                            if self.radiometry is None:
                                yield assemble(tile, buffered, bands, self.scene.dtype)
                            else:
                                yield assemble_rendered(tile, buffered)
                        following = tiles_by_row[rows[index + 1]][0].row_off if index + 1 < len(rows) else None
                        yield RowEnd(row, len(tiles), following)
                finally:  # stopped early (an error downstream, Ctrl-C): do not decode what nobody will read
                    for _, futures in ahead:
                        for future in futures:
                            future.cancel()
        finally:
            for handle in self._handles:
                handle.close()
