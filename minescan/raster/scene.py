"""A georeferenced scene, read one tile window at a time.

:class:`Scene` opens a GeoTIFF/COG (or anything GDAL reads: a local file, or
a GDAL dataset name such as ``/vsimem/...``, ``/vsizip/...``, ``/vsicurl/...``
or a ``SENTINEL2_L2A:...`` subdataset; only plain local paths are checked
for existence) with rasterio, checks that it can be scanned (readable,
georeferenced by a geotransform, the chosen bands exist, one data type that
:mod:`~minescan.raster.radiometry` renders: any real integer or float) and
reads tile windows, never the whole raster.  Bands are chosen by 1-based
index; by default the red, green and blue bands are found from the colour
interpretation or from band descriptions such as ``B04``/``B4``.

Which pixels are nodata (the rule every scan follows):

* With a nodata value (an explicit one, else the raster's): a pixel is
  nodata when ALL chosen bands equal it.  GDAL's nodata is per band: it says
  that band's value is missing, not that the pixel is; a swath edge or a
  Sentinel-2 DN 0 is 0 in every band at once, while a pure red uint8 pixel
  (255, 0, 0) with nodata 0 is data.  An explicit value overrides the
  raster's value and its masks.
* Without one, a per-dataset mask or an alpha band decides (GDAL's
  ``read_masks``: 0 = nodata), as it does for every band alike.
* Otherwise no pixel is nodata by value.
* In float data a pixel is nodata when ANY chosen band is NaN, whatever else
  says so (a NaN nodata value included, which ``==`` never matches): NaN is
  no value, and a pixel missing one of its colours cannot be rendered.
Every error is one line naming the dataset; a failed read carries GDAL's own
reason (e.g. ``TIFFFillTile:Read error at row 512 ...; got 360828 bytes,
expected 360842`` for a truncated file), not rasterio's "see previous
exception".
"""

from __future__ import annotations

import math

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from minescan.errors import MinescanError
from minescan.raster.grid import Tile
from minescan.raster.radiometry import renderable

Exclude = Callable[[Window, "tuple[int, ...]"], np.ndarray]
"""Pixels of a window read into a shape (rows, cols) to leave out of scene statistics (True = leave out)."""

_DESCRIPTION_BANDS = {"red": r"B0?4", "green": r"B0?3", "blue": r"B0?2"}
# GDAL names that are not local files: virtual file systems, URLs, DRIVER:... subdatasets.
# A driver prefix has at least two characters, so a Windows drive letter (C:) is a path.
_NOT_A_FILE = re.compile(r"^(/vsi[a-z0-9_]*/|[A-Za-z][A-Za-z0-9+.-]*://|[A-Za-z][A-Za-z0-9_]+:)")
# rasterio's wrapper around the GDAL error it chains as the cause.
_GENERIC = ("Read failed. See previous exception", "Read or write failed. See previous exception")


class SceneError(MinescanError):
    """A scene that cannot be scanned."""


class UnsupportedDtypeError(SceneError):
    """Bands of a data type the rendering cannot serve (complex, boolean)."""


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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def gdal_reason(exc: BaseException) -> str:
    """The innermost reason GDAL gave for ``exc``, as one short line.

    rasterio raises "Read failed. See previous exception for details." with
    GDAL's errors chained below it (``__cause__``/``__context__``), outermost
    first: "x.tif, band 1: IReadBlock failed at X offset 3, Y offset 1:
    TIFFReadEncodedTile() failed.", "TIFFReadEncodedTile() failed.",
    "TIFFFillTile:Read error at row 512, col 512, tile 7; got 360828 bytes,
    expected 360842".  The last one says what is wrong.
    """
    reasons: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = _short(current)
        if not text.startswith(_GENERIC):
            reasons.append(text)
        current = current.__cause__ or current.__context__
    return reasons[-1] if reasons else _short(exc)


def is_local_path(dataset: str | os.PathLike[str]) -> bool:
    """Whether ``dataset`` names a plain local file (not ``/vsi...``, a URL or a ``DRIVER:...`` subdataset)."""
    if not isinstance(dataset, str):
        return True
    return _NOT_A_FILE.match(dataset) is None


def dataset_name(dataset: str) -> str:
    """A short name for a dataset: the file name, or a subdataset's file name with its suffix.

    ``/data/x.tif`` -> ``x.tif``; ``/vsizip/a.zip/b/x.tif`` -> ``x.tif``;
    ``/vsicurl/https://h/x.tif?sig=1`` -> ``x.tif``;
    ``SENTINEL2_L2A:/p/MTD_MSIL2A.xml:10m:EPSG_32633`` -> ``MTD_MSIL2A.xml:10m:EPSG_32633``.
    """
    if is_local_path(dataset):
        return Path(dataset).name
    name = dataset.split("?", 1)[0].rstrip("/")
    return name.rsplit("/", 1)[-1] or dataset


def _origin(bands_origin: str | None) -> str:
    """`` (from the model)`` for ``model``, `` (from the model's recipe)`` for ``the model's recipe``."""
    if not bands_origin:
        return ""
    words = bands_origin.strip()
    if " " not in words and not words.startswith(("the ", "a ", "an ")):
        words = f"the {words}"
    return f" (from {words})"


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


def _comparable_nodata(nodata: float | None, dtype: np.dtype) -> np.ndarray | None:
    """The nodata value in the data's type, or None where no pixel can equal it.

    None for no nodata, NaN (masked as NaN instead), and integer data whose
    nodata is fractional or outside the type's range (a cast would wrap it onto
    a real value).
    """
    if nodata is None or np.isnan(nodata):
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not float(nodata).is_integer() or not info.min <= nodata <= info.max:
            return None
    return np.asarray(nodata, dtype)


class Scene:
    """An open, checked scene; use as a context manager or call :meth:`close`.

    ``path`` is a local file or any GDAL dataset name (see the module
    docstring).  ``bands`` are 1-based indexes of red, green, blue (default:
    found from the raster); ``bands_origin`` says where they came from
    ("model", "the model's recipe", "product", "option"...) for the error
    message if one does not exist.  ``nodata`` overrides the raster's nodata.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: tuple[int, ...] | None = None,
        nodata: float | None = None,
        bands_origin: str | None = None,
        require_georef: bool = True,
    ) -> None:
        local = is_local_path(path)
        self._require_georef = require_georef  # False: an in-memory array scanned in pixel coordinates
        self.dataset: str = os.fspath(path)
        # A Path of a GDAL name like /vsicurl/https://h/x.tif would lose a slash: keep the string.
        self.path = Path(self.dataset)
        if local and not self.path.exists():
            raise SceneError(f"scene not found: {self.dataset}")
        self._name = dataset_name(self.dataset)
        self._decode_block: tuple[int, int] | None = None
        try:
            self._src: DatasetReader = rasterio.open(self.dataset)
        except RasterioError as exc:
            what = "not a readable raster" if local else "cannot be opened"
            raise SceneError(f"{self.dataset}: {what} ({gdal_reason(exc)})") from exc
        try:
            self._check(bands, nodata, bands_origin)
        except SceneError:
            self._src.close()
            raise

    def _check(self, bands: tuple[int, ...] | None, nodata: float | None, bands_origin: str | None) -> None:
        src = self._src
        where = self.dataset
        if src.count == 0:
            raise SceneError(f"{where}: has no raster bands (a .SAFE product? open its 10 m subdataset)")
        if src.width == 0 or src.height == 0:
            raise SceneError(f"{where}: is empty ({src.width} x {src.height} px)")
        if src.transform.is_identity:
            gcps = src.gcps[0]
            if gcps:
                raise SceneError(
                    f"{where}: is georeferenced only by {len(gcps)} ground control points; warp it to a geotransform "
                    f"first (e.g. gdalwarp -r near {self._name} warped.tif)"
                )
        if (src.crs is None or src.transform.is_identity) and self._require_georef:
            raise SceneError(f"{where}: has no georeferencing (no CRS or geotransform); results could not be placed on a map")
        if bands is None:
            bands = default_rgb_bands(src)
            if bands is None:
                raise SceneError(
                    f"{where}: cannot tell which of its {src.count} bands are red, green, blue; "
                    "give its red, green, blue band indexes, e.g. 3,2,1"
                )
            bands_origin = None
        origin = _origin(bands_origin)
        if len(bands) != 3:
            raise SceneError(f"{where}: bands {list(bands)}{origin} must be exactly 3 indexes (red, green, blue)")
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            count = f"{src.count} band" if src.count == 1 else f"{src.count} bands"
            raise SceneError(f"band {bad[0]}{origin} is out of range: {self._name} has {count}")
        dtypes = {src.dtypes[b - 1] for b in bands}
        unserved = sorted(d for d in dtypes if not renderable(d))
        if unserved:
            raise UnsupportedDtypeError(
                f"{where}: bands {list(bands)} are {'/'.join(unserved)}, which minescan cannot render (it reads "
                "integer or float bands)"
            )
        if len(dtypes) > 1:
            raise SceneError(f"{where}: bands {list(bands)} mix data types {'/'.join(sorted(dtypes))}; they must share one")
        self.bands = tuple(bands)
        self.dtype = dtypes.pop()
        self.nodata = nodata if nodata is not None else src.nodata
        self._floating = np.dtype(self.dtype).kind == "f"
        self._nodata_value = _comparable_nodata(self.nodata, np.dtype(self.dtype))
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
    def band_descriptions(self) -> tuple[str, ...]:
        """The chosen bands' descriptions ('' where the raster has none), e.g. ('B4', 'B3', 'B2')."""
        return tuple(self._src.descriptions[b - 1] or "" for b in self.bands)

    @property
    def block_shape(self) -> tuple[int, int]:
        """(rows, cols) of the file's blocks for the first chosen band."""
        return tuple(self._src.block_shapes[self.bands[0] - 1])  # type: ignore[return-value]

    @property
    def decode_block(self) -> tuple[int, int]:
        """(rows, cols) the files behind the scene are decoded in: :attr:`block_shape`, or a VRT's sources' blocks.

        See :mod:`minescan.raster.decoding`; found once per scene (it opens the files behind a VRT).
        """
        if self._decode_block is None:
            from minescan.raster.decoding import native_block

            self._decode_block = native_block(self.dataset, self.block_shape)
        return self._decode_block

    @property
    def name(self) -> str:
        """The dataset's short name (see :func:`dataset_name`)."""
        return self._name

    def _nodata_mask(self, data: np.ndarray, window: Window, handle: DatasetReader,
                     out_shape: tuple[int, int] | None = None) -> np.ndarray:
        # Band by band into one mask: a third of the memory traffic of (data == v).all(axis=0).
        # Nodata where ALL chosen bands hold the value (see the module docstring); NaN: where ANY band is NaN.
        if self._nodata_value is not None:
            mask = np.equal(data[0], self._nodata_value)
            for band in data[1:]:
                mask &= band == self._nodata_value
        elif self._dataset_mask:
            mask = handle.read_masks(self.bands[0], window=window, out_shape=out_shape) == 0
        else:
            mask = np.zeros(data.shape[1:], bool)
        if self._floating:  # NaN is nodata whatever the nodata value (NaN itself never compares equal)
            for band in data:
                mask |= np.isnan(band)
        return mask

    def open_handle(self) -> DatasetReader:
        """Another handle on the same raster, for a reader thread (a handle is not thread-safe)."""
        return rasterio.open(self.dataset)

    def read_window(self, window: Window, handle: DatasetReader | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The chosen bands [B, h, w] and nodata mask [h, w] of a window inside the scene."""
        handle = handle or self._src
        try:
            data = handle.read(self.bands, window=window)
            return data, self._nodata_mask(data, window, handle)
        except RasterioError as exc:
            raise SceneError(
                f"{self.dataset}: read failed at pixel ({int(window.col_off)}, {int(window.row_off)}): {gdal_reason(exc)}"
            ) from exc

    def read(self, tile: Tile) -> TileData:
        """The tile's window, zero-padded (and marked nodata) where it extends past the scene."""
        data, nodata = self.read_window(Window(tile.col_off, tile.row_off, tile.valid_width, tile.valid_height))
        return pad_tile(tile, data, nodata)

    def overview(self, max_size: int = 1024, *, exclude: Exclude | None = None) -> TileData:
        """The whole scene decimated to at most ``max_size`` px a side, for scene-wide statistics.

        rasterio serves it from overviews when the file has them.  ``exclude(window, shape)``, when given, marks
        pixels to leave out of the statistics (a quality mask's clouds) as nodata too.
        """
        factor = max(1, -(-max(self.width, self.height) // max_size))
        shape = (len(self.bands), max(1, self.height // factor), max(1, self.width // factor))
        window = Window(0, 0, self.width, self.height)
        try:
            data = self._src.read(self.bands, out_shape=shape, resampling=Resampling.nearest)
            nodata = self._nodata_mask(data, window, self._src, out_shape=shape[1:])
        except RasterioError as exc:
            raise SceneError(f"{self.dataset}: read failed: {gdal_reason(exc)}") from exc
        if exclude is not None:
            nodata = nodata | exclude(window, shape[1:])
        whole = Tile(0, 0, 0, 0, self.width, self.height, self.width, self.height, False, False, False, False)
        return TileData(whole, data, nodata)

    def statistics_sample(self, *, windows: int = 64, window_size: int = 256, exclude: Exclude | None = None) -> TileData:
        """Scene-wide statistics input, read without decoding the whole scene: ``data`` [B, h, w], ``nodata`` [h, w].

        From the file's overviews (JPEG 2000 resolution levels, GeoTIFF
        overviews) when it has them; else, for a scene of at most ``windows``
        x ``window_size``^2 x 4 pixels, the whole scene decimated; else a
        stratified sample of ``windows`` windows of ``window_size`` px (an even
        grid, each window aligned to the file's blocks where they are square),
        laid side by side.  Every normalisation, ``--stretch`` and the
        domain-shift guard read scene statistics through here, once per scene.
        ``exclude(window, shape)`` marks pixels to leave out (clouds under a quality mask) as nodata.
        """
        budget = windows * window_size * window_size
        has_overviews = bool(self._src.overviews(self.bands[0]))
        if has_overviews or self.width * self.height <= 4 * budget:
            return self.overview(exclude=exclude)
        per_side = max(1, int(math.isqrt(windows)))
        block_h, block_w = self._src.block_shapes[self.bands[0] - 1]
        size = min(window_size, self.width, self.height)
        parts, masks, used = [], [], set()
        for i in range(per_side):
            for j in range(per_side):
                row = int((i + 0.5) * self.height / per_side - size / 2)
                col = int((j + 0.5) * self.width / per_side - size / 2)
                # Start on a block (one block decoded per window) unless blocks are so large that
                # two windows would start on the same one.
                aligned = (row - row % block_h, col - col % block_w)
                if block_h == block_w and block_h >= 64 and aligned not in used:
                    row, col = aligned
                used.add(aligned)
                row, col = min(max(row, 0), self.height - size), min(max(col, 0), self.width - size)
                window = Window(col, row, size, size)
                try:
                    data = self._src.read(self.bands, window=window)
                    mask = self._nodata_mask(data, window, self._src)
                except RasterioError as exc:
                    raise SceneError(f"{self.dataset}: read failed: {gdal_reason(exc)}") from exc
                if exclude is not None:
                    mask = mask | exclude(window, mask.shape)
                parts.append(data)
                masks.append(mask)
        data, nodata = np.concatenate(parts, axis=2), np.concatenate(masks, axis=1)
        whole = Tile(0, 0, 0, 0, self.width, self.height, self.width, self.height, False, False, False, False)
        return TileData(whole, data, nodata)

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
