"""A georeferenced scene, read one tile window at a time.

:class:`Scene` opens a GeoTIFF/COG (or anything GDAL reads) with rasterio,
checks that it can be scanned (readable, georeferenced, the chosen bands
exist, a supported data type) and reads tile windows, never the whole
raster.  Bands are chosen by 1-based index; by default the red, green and
blue bands are found from the colour interpretation or from band
descriptions such as ``B04``/``B4``.  Nodata comes from the dataset's nodata
value, a per-dataset mask or alpha band, or an explicit value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from minescan.errors import MinescanError
from minescan.raster.grid import Tile

SUPPORTED_DTYPES = ("uint8", "uint16")
_DESCRIPTION_BANDS = {"red": r"B0?4", "green": r"B0?3", "blue": r"B0?2"}


class SceneError(MinescanError):
    """A scene that cannot be scanned."""


@dataclass(frozen=True)
class TileData:
    """A tile's pixels bands-first [B, size, size] and its nodata mask [size, size] (True = nodata)."""

    tile: Tile
    data: np.ndarray
    nodata: np.ndarray

    @property
    def empty(self) -> bool:
        return bool(self.nodata.all())


def pad_tile(tile: Tile, data: np.ndarray, nodata: np.ndarray) -> TileData:
    """A tile from its valid pixels, zero-padded and marked nodata up to the full tile size."""
    if data.shape[1:] != (tile.height, tile.width):
        full = np.zeros((data.shape[0], tile.height, tile.width), data.dtype)
        full[:, : data.shape[1], : data.shape[2]] = data
        mask = np.ones((tile.height, tile.width), bool)
        mask[: nodata.shape[0], : nodata.shape[1]] = nodata
        data, nodata = full, mask
    return TileData(tile, data, nodata)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def default_rgb_bands(src: DatasetReader) -> tuple[int, int, int] | None:
    """Red, green, blue band indexes from colour interpretation or descriptions, or None."""
    interp = list(src.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        return tuple(interp.index(c) + 1 for c in wanted)  # type: ignore[return-value]
    found = []
    for pattern in _DESCRIPTION_BANDS.values():
        hits = [i + 1 for i, d in enumerate(src.descriptions) if d and re.match(rf"^{pattern}\b", d.strip(), re.I)]
        if len(hits) != 1:
            break
        found.append(hits[0])
    if len(found) == 3:
        return tuple(found)  # type: ignore[return-value]
    if src.count == 3:
        return (1, 2, 3)
    return None


class Scene:
    """An open, checked scene; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: tuple[int, ...] | None = None,
        nodata: float | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SceneError(f"scene not found: {self.path}")
        try:
            self._src: DatasetReader = rasterio.open(self.path)
        except RasterioError as exc:
            raise SceneError(f"{self.path}: not a readable raster ({_short(exc)})") from exc
        try:
            self._check(bands, nodata)
        except SceneError:
            self._src.close()
            raise

    def _check(self, bands: tuple[int, ...] | None, nodata: float | None) -> None:
        src = self._src
        if src.count == 0:
            raise SceneError(f"{self.path}: has no raster bands (a .SAFE product? open its 10 m subdataset)")
        if src.width == 0 or src.height == 0:
            raise SceneError(f"{self.path}: is empty ({src.width} x {src.height} px)")
        if src.crs is None or src.transform.is_identity:
            raise SceneError(f"{self.path}: has no georeferencing (no CRS or geotransform); results could not be placed on a map")
        if bands is None:
            bands = default_rgb_bands(src)
            if bands is None:
                raise SceneError(
                    f"{self.path}: cannot tell which of its {src.count} bands are red, green, blue; pass --bands (e.g. 3,2,1)"
                )
        if len(bands) != 3:
            raise SceneError(f"--bands needs exactly 3 band indexes (red, green, blue), got {list(bands)}")
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise SceneError(f"band {bad[0]} out of range: {self.path.name} has {src.count} band(s)")
        dtypes = {src.dtypes[b - 1] for b in bands}
        unsupported = dtypes - set(SUPPORTED_DTYPES)
        if unsupported or len(dtypes) > 1:
            raise SceneError(
                f"{self.path}: bands {list(bands)} are {'/'.join(sorted(dtypes))}; minescan reads {' or '.join(SUPPORTED_DTYPES)}"
            )
        self.bands = tuple(bands)
        self.dtype = dtypes.pop()
        self.nodata = nodata if nodata is not None else src.nodata
        flags = src.mask_flag_enums[bands[0] - 1]
        self._dataset_mask = self.nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)

    @property
    def width(self) -> int:
        return self._src.width

    @property
    def height(self) -> int:
        return self._src.height

    @property
    def crs(self) -> rasterio.crs.CRS:
        return self._src.crs

    @property
    def transform(self) -> rasterio.Affine:
        return self._src.transform

    @property
    def block_shape(self) -> tuple[int, int]:
        """(rows, cols) of the file's blocks for the first chosen band."""
        return tuple(self._src.block_shapes[self.bands[0] - 1])  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.path.name

    def _nodata_mask(self, data: np.ndarray, window: Window, handle: DatasetReader) -> np.ndarray:
        if self.nodata is not None:
            # Band by band into one mask: a third of the memory traffic of (data == v).any(axis=0).
            value = np.asarray(self.nodata, data.dtype)
            mask = np.equal(data[0], value)
            for band in data[1:]:
                mask |= band == value
            return mask
        if self._dataset_mask:
            return handle.read_masks(self.bands[0], window=window) == 0
        return np.zeros(data.shape[1:], bool)

    def open_handle(self) -> DatasetReader:
        """Another handle on the same raster, for a reader thread (a handle is not thread-safe)."""
        return rasterio.open(self.path)

    def read_window(self, window: Window, handle: DatasetReader | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The chosen bands [B, h, w] and nodata mask [h, w] of a window inside the scene."""
        handle = handle or self._src
        try:
            data = handle.read(self.bands, window=window)
            return data, self._nodata_mask(data, window, handle)
        except RasterioError as exc:
            raise SceneError(
                f"{self.path}: read failed at pixel ({int(window.col_off)}, {int(window.row_off)}): {_short(exc)}"
            ) from exc

    def read(self, tile: Tile) -> TileData:
        """The tile's window, zero-padded (and marked nodata) where it extends past the scene."""
        data, nodata = self.read_window(Window(tile.col_off, tile.row_off, tile.valid_width, tile.valid_height))
        return pad_tile(tile, data, nodata)

    def overview(self, max_size: int = 1024) -> TileData:
        """The whole scene decimated to at most ``max_size`` px a side, for scene-wide statistics.

        rasterio serves it from overviews when the file has them.
        """
        factor = max(1, -(-max(self.width, self.height) // max_size))
        shape = (len(self.bands), max(1, self.height // factor), max(1, self.width // factor))
        try:
            data = self._src.read(self.bands, out_shape=shape, resampling=Resampling.nearest)
        except RasterioError as exc:
            raise SceneError(f"{self.path}: read failed: {_short(exc)}") from exc
        window = Window(0, 0, self.width, self.height)
        if self._dataset_mask:
            nodata = self._src.read_masks(self.bands[0], out_shape=shape[1:], window=window) == 0
        else:
            nodata = self._nodata_mask(data, window, self._src)
        whole = Tile(0, 0, 0, 0, self.width, self.height, self.width, self.height, False, False, False, False)
        return TileData(whole, data, nodata)

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
