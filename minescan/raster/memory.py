"""In-memory rasters scanned exactly like files.

:meth:`minescan.Scanner.detect` takes a NumPy array [H, W, C] (a chip a
service received, a mosaic built in memory).  Rather than a second reader
with its own rules for dtypes, nodata and bands, the array is written once
into an uncompressed, tiled GeoTIFF in GDAL's memory file system
(``/vsimem/``, never on disk) and scanned through the same
:class:`~minescan.raster.scene.Scene`, plan and stream as a file: one copy of
the pixels (a memcpy's cost next to inference), identical behaviour.  Each
call gets a file of its own, removed when the scan ends, so concurrent calls
never share one.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator

import numpy as np

from minescan.errors import MinescanError
from minescan.raster.sources.source import Source


class ArrayError(MinescanError):
    """An in-memory raster that cannot be scanned."""


@contextlib.contextmanager
def array_source(array: np.ndarray, *, transform: Any = None, crs: Any = None, nodata: float | None = None,
                 name: str = "array") -> Iterator[Source]:
    """A :class:`Source` for ``array`` [H, W, C] or [H, W], alive inside the ``with`` block."""
    import rasterio
    from rasterio.io import MemoryFile

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or 0 in array.shape:
        raise ArrayError(f"{name}: expected an array [height, width, bands], got shape {list(array.shape)}")
    height, width, count = array.shape
    if (transform is None) != (crs is None):
        raise ArrayError(f"{name}: give both transform and crs, or neither (pixel coordinates)")
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name, tiled=True,
                   blockxsize=256, blockysize=256, nodata=nodata)
    if transform is not None:
        profile.update(transform=transform, crs=rasterio.crs.CRS.from_user_input(crs))
    try:
        memfile = MemoryFile(filename=f"{uuid.uuid4().hex}.tif")
    except Exception as exc:  # noqa: BLE001 - GDAL refusing a memory file is not the caller's fault; say why
        raise ArrayError(f"{name}: cannot hold the array in GDAL's memory ({exc})") from exc
    with memfile:
        try:
            with memfile.open(**profile) as dst:
                dst.write(np.moveaxis(array, 2, 0))
        except (ValueError, TypeError, rasterio.errors.RasterioError) as exc:
            raise ArrayError(f"{name}: GDAL cannot hold a {array.dtype} array of {count} band(s) ({exc})") from exc
        yield Source(name, "array", memfile.name, name, georeferenced=transform is not None)
