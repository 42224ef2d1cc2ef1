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
yields :class:`CutTile` instead of :class:`TileData`: a tile that is not
copied yet, which the batching stage cuts straight into its batch (one copy
per tile pixel from the rendered strips to the model's input).  Rendering
and cutting run in the native module (:mod:`minescan.raster.native`) with
the GIL released.

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
from minescan.raster.buffers import Recycler
from minescan.raster.grid import Tile, TileGrid
from minescan.raster.native import native
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
    """Pixels of one block-aligned window: decoded bands-first [B, h, w], or rendered uint8 [h, w, 3].

    ``masked`` counts its nodata pixels when known (rendering counts them), else None.
    """

    window: Window
    data: np.ndarray
    nodata: np.ndarray
    masked: int | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(col_off, row_off, width, height) in scene pixels."""
        w = self.window
        return int(w.col_off), int(w.row_off), int(w.width), int(w.height)


def _overlapping(tile: Tile, pieces_: list[_Piece]) -> tuple[_Piece, ...]:
    """The pieces holding some of the tile's valid pixels."""
    x0, y0 = tile.col_off, tile.row_off
    x1, y1 = x0 + tile.valid_width, y0 + tile.valid_height
    out = []
    for p in pieces_:
        px, py, pw, ph = p.box
        if px < x1 and px + pw > x0 and py < y1 and py + ph > y0:
            out.append(p)
    return tuple(out)


def _cut_into(dst: np.ndarray, tile: Tile, sources: list[tuple[np.ndarray, int, int]], elem: int, fill: int) -> None:
    """Native cut of the tile's valid rectangle out of ``sources`` [(bytes [P, h, w * elem], row_off, col_off)] into ``dst``."""
    native.cut(dst, sources, elem, tile.col_off, tile.row_off, tile.valid_width, tile.valid_height, fill)


def _mask_of(tile: Tile, pieces_: tuple[_Piece, ...]) -> np.ndarray:
    """The tile's nodata mask [size, size] (padding True), cut out of the pieces' masks."""
    mask = np.empty((tile.height, tile.width), bool)
    sources = [(p.nodata.view(np.uint8)[None], p.box[1], p.box[0]) for p in pieces_]
    _cut_into(mask.view(np.uint8)[None], tile, sources, 1, 1)
    return mask


def assemble(tile: Tile, pieces_: list[_Piece], bands: int, dtype: str) -> TileData:
    """Copy the tile's pixels out of the decoded pieces that cover it (one native copy per pixel)."""
    covering = _overlapping(tile, pieces_)
    data = np.empty((bands, tile.height, tile.width), dtype)
    itemsize = data.dtype.itemsize
    sources = [(p.data.view(np.uint8), p.box[1], p.box[0]) for p in covering]
    _cut_into(data.view(np.uint8), tile, sources, itemsize, 0)
    return TileData(tile, data, _mask_of(tile, covering))


@dataclass(frozen=True)
class RenderedTile:
    """A tile as the model takes it: uint8 RGB [size, size, 3] (nodata pixels 0) and its nodata mask [size, size]."""

    tile: Tile
    rgb: np.ndarray
    nodata: np.ndarray

    @property
    def empty(self) -> bool:
        return bool(self.nodata.all())

    def cut_into(self, out: np.ndarray) -> None:
        """Copy the RGB into ``out`` [size, size, 3] (a batch's slot)."""
        out[...] = self.rgb


class CutTile:
    """A tile of the reader not yet copied out of its rendered strips: it is cut straight into its batch.

    Interface of :class:`RenderedTile` (``tile``, ``rgb``, ``nodata``, ``empty``,
    ``cut_into``); ``rgb`` and ``nodata`` are cut on demand (the mask once).  The
    pieces know how many of their pixels are nodata, so a tile with none (most
    of a scene) is known non-empty without looking at its mask, and a tile
    whose pieces are all nodata is known empty.
    """

    __slots__ = ("tile", "_pieces", "_nodata")

    def __init__(self, tile: Tile, pieces_: tuple[_Piece, ...]) -> None:
        self.tile = tile
        self._pieces = pieces_
        self._nodata: np.ndarray | None = None

    @property
    def clear(self) -> bool:
        """Whether every pixel of the tile holds data (no padding, no nodata in its pieces)."""
        t = self.tile
        return t.valid_width == t.width and t.valid_height == t.height and all(p.masked == 0 for p in self._pieces)

    @property
    def empty(self) -> bool:
        if self.clear:
            return False
        if all(p.masked == p.data.shape[0] * p.data.shape[1] for p in self._pieces):
            return True  # every piece it touches is nodata, and padding is nodata
        return bool(self.nodata.all())

    @property
    def nodata(self) -> np.ndarray:
        if self._nodata is None:
            self._nodata = _mask_of(self.tile, self._pieces)
        return self._nodata

    @property
    def rgb(self) -> np.ndarray:
        out = np.empty((self.tile.height, self.tile.width, 3), np.uint8)
        self.cut_into(out)
        return out

    def cut_into(self, out: np.ndarray) -> None:
        """Cut the tile's RGB into ``out`` [size, size, 3] (C-contiguous, e.g. a batch's slot); padding black."""
        sources = [(p.data.reshape(1, p.data.shape[0], -1), p.box[1], p.box[0]) for p in self._pieces]
        _cut_into(out.reshape(1, self.tile.height, -1), self.tile, sources, 3, 0)


@dataclass(frozen=True)
class RowEnd:
    """Marks the end of tile row ``row`` (``tiles`` tiles); the next row starts at scene row ``next_top`` (None = last)."""

    row: int
    tiles: int
    next_top: int | None


@dataclass(frozen=True)
class RawRow:
    """One tile row's full-width decoded rows: ``data`` [B, rows, width] from scene row ``top``, ``nodata`` [rows, width]."""

    end: RowEnd
    tiles: tuple[Tile, ...]
    top: int
    data: np.ndarray
    nodata: np.ndarray


class StripReader:
    """Yields the grid's tiles top to bottom, each tile row followed by a :class:`RowEnd`.

    Tiles are :class:`TileData` as read, or :class:`CutTile` when ``radiometry``
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
        # Rendered pieces are reused once no tile refers to them: about the strips in flight (_AHEAD + 2) of
        # pieces at least MIN_PIECE wide (minescan.raster.buffers).
        self._rendered = Recycler(keep=(_AHEAD + 2) * (1 + scene.width // MIN_PIECE))
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
                out = self._rendered.take((data.shape[1], data.shape[2], data.shape[0]))
                data, masked = self.radiometry.render(data, nodata, out)
            return _Piece(window, data, nodata, masked)
        return _Piece(window, data, nodata)

    def __iter__(self) -> Iterator[TileData | CutTile | RowEnd]:
        bands = len(self.scene.bands)
        for tiles, buffered, end in self._rows():
            for tile in tiles:
                if self.radiometry is None:
                    yield assemble(tile, buffered, bands, self.scene.dtype)
                else:
                    yield CutTile(tile, _overlapping(tile, buffered))
            yield end

    def raw_rows(self) -> Iterator[RawRow]:
        """Each tile row's full-width raw rows (the rows its tiles cover, decoded, not rendered), top to bottom.

        For rendering elsewhere (the GPU: :mod:`minescan.raster.gpu_render`); the reader must have
        no ``radiometry``.  One copy per pixel (native) out of the decoded pieces.
        """
        if self.radiometry is not None:
            raise ValueError("raw_rows hands over decoded rows to render elsewhere: make the reader without a radiometry")
        bands, width = len(self.scene.bands), self.scene.width
        for tiles, buffered, end in self._rows():
            top, height = tiles[0].row_off, tiles[0].valid_height
            band = Tile(tiles[0].row, 0, 0, top, width, height, width, height, False, False, False, False)
            covering = _overlapping(band, buffered)
            data = np.empty((bands, height, width), self.scene.dtype)
            sources = [(p.data.view(np.uint8), p.box[1], p.box[0]) for p in covering]
            _cut_into(data.view(np.uint8), band, sources, data.dtype.itemsize, 0)
            yield RawRow(end, tuple(tiles), top, data, _mask_of(band, covering))

    def _rows(self) -> Iterator[tuple[list[Tile], list[_Piece], RowEnd]]:
        """Each tile row's tiles, the decoded pieces covering it, and its :class:`RowEnd`."""
        tiles_by_row: dict[int, list[Tile]] = {}
        first, stop = self.rows or (0, self.grid.shape[0])
        for tile in self.grid:
            if first <= tile.row < stop:
                tiles_by_row.setdefault(tile.row, []).append(tile)
        if not tiles_by_row:
            return
        height, width = self.scene.height, self.scene.width
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
                        following = tiles_by_row[rows[index + 1]][0].row_off if index + 1 < len(rows) else None
                        yield tiles, buffered, RowEnd(row, len(tiles), following)
                finally:  # stopped early (an error downstream, Ctrl-C): do not decode what nobody will read
                    for _, futures in ahead:
                        for future in futures:
                            future.cancel()
        finally:
            for handle in self._handles:
                handle.close()
