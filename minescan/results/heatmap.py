"""Writing a heatmap as a Cloud Optimized GeoTIFF: one band per class, named by its label.

The cell grid of :mod:`minescan.scan.heatmap` georeferenced to the scene (the
scene's transform scaled by the stride), written with GDAL's COG driver
(tiled, internal overviews resampled by *average*, so a zoomed-out view
shows mean probability).  ``uint8`` (default): probability x 254 rounded, 255 =
nodata, a quarter of the size of floats and exact to 0.002; ``float32``:
probabilities as they are, NaN = nodata.  Band descriptions are the class
labels, so QGIS and ``rasterio`` show them by name.  The file appears
atomically (:func:`minescan.results.atomic.atomic_path`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minescan.errors import MinescanError
from minescan.results.atomic import atomic_path

UINT8_SCALE = 254
UINT8_NODATA = 255
TAGS_KEY = "minescan"  # dataset tag holding the scan's facts as JSON


class HeatmapWriteError(MinescanError):
    """A heatmap that cannot be written."""


class HeatmapReadError(MinescanError):
    """A file that cannot be read as a heatmap."""


def encode_uint8(probabilities: np.ndarray) -> np.ndarray:
    """float [C, rows, cols] in [0, 1] (NaN = nodata) as uint8: round(p * 254), 255 for nodata."""
    values = np.clip(np.nan_to_num(probabilities, nan=0.0), 0.0, 1.0)
    encoded = np.floor(values * UINT8_SCALE + 0.5).astype(np.uint8)
    encoded[np.isnan(probabilities)] = UINT8_NODATA
    return encoded


def write_heatmap(path: str | os.PathLike[str], probabilities: np.ndarray, *, transform: Any, crs: Any, stride: int,
                  labels: Sequence[str], as_float: bool = False, tags: Mapping[str, Any] | None = None) -> Path:
    """Write ``probabilities`` [C, rows, cols] (cells of ``stride`` scene px; ``transform`` is the scene's) as a COG.

    ``tags`` (scene, model, window, stride, the guard's verdict) land as JSON in the ``minescan`` dataset tag,
    read back by :func:`heatmap_tags`."""
    import rasterio
    from affine import Affine

    classes, rows, cols = probabilities.shape
    if len(labels) != classes:
        raise HeatmapWriteError(f"{classes} classes in the heatmap but {len(labels)} labels")
    path = Path(path)
    cell_transform = transform * Affine.scale(stride) if transform is not None else None
    data = probabilities.astype(np.float32) if as_float else encode_uint8(probabilities)
    # COG makes overviews only down to one block, and its smallest block is 128: a small map (a 10980 px scene at
    # stride 64 is 172 cells a side, a 2048 px demo at stride 32 is 64) would get none; ask for its levels, down
    # to about 16 cells a side.
    block = 128 if max(rows, cols) <= 1024 else 256
    levels = {} if block == 256 else {"OVERVIEW_COUNT": max(1, math.ceil(math.log2(max(rows, cols) / 16)))}
    profile = dict(driver="COG", width=cols, height=rows, count=classes, dtype=data.dtype.name, crs=crs,
                   transform=cell_transform, nodata=float("nan") if as_float else UINT8_NODATA,
                   BLOCKSIZE=block, COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="AVERAGE", **levels)
    try:
        with atomic_path(path) as temporary:
            with rasterio.open(temporary, "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = tuple(labels)
                dst.update_tags(minescan_encoding="probability" if as_float else f"probability x {UINT8_SCALE}, {UINT8_NODATA} = nodata",
                                **({TAGS_KEY: json.dumps(dict(tags), default=str)} if tags else {}))
    except MinescanError:
        raise
    except Exception as exc:  # rasterio raises its own error types
        raise HeatmapWriteError(f"cannot write {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    return path


@dataclass(frozen=True)
class HeatmapFile:
    """A heatmap read back: ``probabilities`` float32 [C, rows, cols] (NaN nodata), band ``labels``, the cell grid's
    ``transform`` and ``crs`` (pyproj), and the scan's ``tags`` (empty for a file minescan did not write)."""

    path: Path
    probabilities: np.ndarray
    labels: tuple[str, ...]
    transform: Any
    crs: Any
    tags: Mapping[str, Any]

    def band(self, label: str | None = None) -> int:
        """The 1-based band named ``label`` (default: the last, a binary model's positive class)."""
        if label is None:
            return len(self.labels)
        if label not in self.labels:
            raise HeatmapReadError(f"{self.path}: no band {label!r}; its bands: {', '.join(self.labels)}")
        return self.labels.index(label) + 1


def decode(data: np.ndarray, dtype: str, nodata: float | None = None) -> np.ndarray:
    """Stored values as float32 probabilities, NaN for nodata: uint8 ``value / 254`` (255 nodata) or floats
    (NaN, or the file's own nodata value)."""
    if dtype == "uint8":
        values = data.astype(np.float32) / UINT8_SCALE
        values[data == UINT8_NODATA] = np.nan
        return values
    values = data.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        values[data == nodata] = np.nan
    return values


def read_heatmap(path: str | os.PathLike[str]) -> HeatmapFile:
    """Read a heatmap: a raster minescan wrote (tagged ``minescan_encoding``), or a float raster of probabilities
    from elsewhere.  Each reason it is not one is a :class:`HeatmapReadError` naming the file."""
    import rasterio
    from pyproj import CRS

    path = Path(path)
    if not path.is_file():
        raise HeatmapReadError(f"{path}: not found" if not path.exists() else f"{path}: is not a file")
    try:
        src = rasterio.open(path)
    except Exception as exc:  # rasterio raises its own error types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeatmapReadError(f"{path}: not a readable raster ({message})") from None
    with src:
        dtype = src.dtypes[0]
        if src.tags().get("minescan_encoding") is None and dtype not in ("float32", "float64"):
            raise HeatmapReadError(
                f"{path}: not a heatmap ({src.count} {dtype} band(s) without minescan's encoding tag; "
                "a heatmap is what minescan scan --model CLASSIFIER --out FILE.tif writes)")
        if src.crs is None:
            raise HeatmapReadError(f"{path}: has no CRS; cannot place its cells on the map")
        data = decode(src.read(), dtype, src.nodata)
        labels = tuple(d or str(i + 1) for i, d in enumerate(src.descriptions))
        raw = src.tags().get(TAGS_KEY)
        crs = CRS.from_user_input(src.crs.to_wkt())
        return HeatmapFile(path, data, labels, src.transform, crs, json.loads(raw) if raw else {})
