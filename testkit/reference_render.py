"""The numpy render and cut that minescan's native module replaced, kept as the reference it must equal.

``render`` is bit-for-bit what :meth:`minescan.raster.radiometry.Radiometry.apply`
computed in numpy before the native module (2026-12-04): a table per band for 8
and 16 bit data (``np.take`` into a strided view of the interleaved output), the
formula in one float32 (float32 data) or float64 work buffer otherwise,
``numpy.interp`` for curves, then nodata -> 0.  ``cut`` is the old tile cut (a
copy out of the pieces that cover the tile; padding zero, its mask True) and
``stack`` the old batch (``np.stack``).  ``tests/test_native.py`` checks the native
module against them; ``benchmarks/native_render.py`` times them against it.
"""

from __future__ import annotations

import numpy as np

_TABLE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16))


def tables(radiometry, dtype: np.dtype) -> np.ndarray:
    """[B, 2**bits] uint8: entry ``u`` renders the value whose bit pattern is ``u``."""
    patterns = np.arange(2 ** (8 * dtype.itemsize), dtype=np.dtype(f"u{dtype.itemsize}"))
    values = patterns.view(dtype).astype(np.float64)
    if radiometry.curves is not None:
        scaled = np.stack([np.interp(values, xs, ys) for xs, ys in radiometry.curves])
    else:
        low = np.asarray(radiometry.low, np.float64)
        factor = 255.0 / (np.asarray(radiometry.high, np.float64) - low)
        scaled = (values[None, :] - low[:, None]) * factor[:, None]
    return np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


def render(radiometry, data: np.ndarray, nodata: np.ndarray | None = None) -> np.ndarray:
    """Bands-first ``data`` [B, H, W] to bands-last uint8 [H, W, B]; ``nodata`` to 0."""
    dtype = data.dtype
    rgb = np.empty(data.shape[1:] + data.shape[:1], np.uint8)
    if radiometry.passthrough:
        for band in range(data.shape[0]):
            rgb[..., band] = data[band]
    elif dtype in _TABLE_DTYPES:
        table = tables(radiometry, dtype)
        index = data.view(np.dtype(f"u{dtype.itemsize}")) if dtype.kind == "i" else data
        for band in range(data.shape[0]):
            np.take(table[band], index[band], out=rgb[..., band])
    elif radiometry.curves is not None:
        for band, (xs, ys) in enumerate(radiometry.curves):
            levels = np.interp(data[band].astype(np.float64), xs, ys)
            levels = np.nan_to_num(levels, nan=0.0)
            np.copyto(rgb[..., band], np.floor(np.clip(levels, 0.0, 255.0) + 0.5), casting="unsafe")
    else:
        work_dtype = np.float32 if data.dtype == np.float32 else np.float64
        work = np.empty(data.shape[1:], work_dtype)
        low = np.asarray(radiometry.low, np.float64)
        factor = 255.0 / (np.asarray(radiometry.high, np.float64) - low)
        for band in range(data.shape[0]):
            np.subtract(data[band], work_dtype(low[band]), out=work, dtype=work_dtype, casting="unsafe")
            np.multiply(work, work_dtype(factor[band]), out=work)
            work += work_dtype(0.5)
            np.fmax(work, work_dtype(0.5), out=work)
            np.fmin(work, work_dtype(255.5), out=work)
            np.copyto(rgb[..., band], work, casting="unsafe")
    if nodata is not None:
        rgb[nodata] = 0
    return rgb


def cut(tile, pieces: list[tuple[int, int, np.ndarray, np.ndarray]], channels_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The tile's pixels and nodata mask out of ``pieces`` [(row_off, col_off, data, nodata)]; padding zero / True.

    ``data`` is rendered [h, w, 3] (``channels_last``) or decoded bands-first [B, h, w].
    """
    sample = pieces[0][2]
    shape = (tile.height, tile.width, 3) if channels_last else (sample.shape[0], tile.height, tile.width)
    data = np.zeros(shape, sample.dtype)
    nodata = np.ones((tile.height, tile.width), bool)
    x0, y0 = tile.col_off, tile.row_off
    x1, y1 = x0 + tile.valid_width, y0 + tile.valid_height
    for py0, px0, pdata, pmask in pieces:
        ph, pw = pmask.shape
        cx0, cy0, cx1, cy1 = max(x0, px0), max(y0, py0), min(x1, px0 + pw), min(y1, py0 + ph)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        rows, cols = slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0)
        if channels_last:
            data[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = pdata[rows, cols]
        else:
            data[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = pdata[:, rows, cols]
        nodata[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = pmask[rows, cols]
    return data, nodata


def stack(tiles: list[np.ndarray]) -> np.ndarray:
    """The old batch: the tiles' RGB stacked into [N, size, size, 3] (one more copy of every pixel)."""
    return np.stack(tiles)
