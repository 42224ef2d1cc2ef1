"""Stacking bands from several rasters into one, without copying pixels.

A GDAL VRT is a small XML file that points at band 1 of ``B04.jp2``, band 1
of ``B03.jp2`` and so on; GDAL reads it like any raster and fetches pixels
from the referenced files (local paths or ``/vsicurl/``-style strings, and
also dataset strings such as a ``SENTINEL2_L2A:`` subdataset).  All
referenced bands must share the grid: size, transform and CRS.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError

from minescan.results.atomic import write_atomically
from minescan.raster.sources.source import SourceError, first_line

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "float32": "Float32", "float64": "Float64",
}


@dataclass(frozen=True)
class BandRef:
    """Band ``band`` (1-based) of the raster GDAL opens as ``dataset``, and what to call it."""

    dataset: str
    band: int = 1
    description: str = ""
    color: ColorInterp = ColorInterp.undefined


def _band_element(index: int, ref: BandRef, src, nodata: float | None) -> ET.Element:
    dtype = src.dtypes[ref.band - 1]
    band = ET.Element("VRTRasterBand", dataType=_GDAL_TYPES[dtype], band=str(index))
    if ref.description:
        ET.SubElement(band, "Description").text = ref.description
    if nodata is not None:
        ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
    ET.SubElement(band, "ColorInterp").text = ref.color.name.capitalize()
    source = ET.SubElement(band, "SimpleSource")
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = ref.dataset
    ET.SubElement(source, "SourceBand").text = str(ref.band)
    rows, cols = src.block_shapes[ref.band - 1]
    ET.SubElement(source, "SourceProperties", RasterXSize=str(src.width), RasterYSize=str(src.height),
                  DataType=_GDAL_TYPES[dtype], BlockXSize=str(cols), BlockYSize=str(rows))
    window = dict(xOff="0", yOff="0", xSize=str(src.width), ySize=str(src.height))
    ET.SubElement(source, "SrcRect", **window)
    ET.SubElement(source, "DstRect", **window)
    return band


def stack_path(folder: Path, product_id: str, key: str) -> Path:
    """Where to write the VRT for input ``key``: unique per input even when product ids collide."""
    return folder / f"{product_id}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.vrt"


def write_stack(path: str | os.PathLike[str], bands: Sequence[BandRef], *, nodata: float | None = None) -> Path:
    """Write a VRT at ``path`` stacking ``bands`` in order; ``nodata`` overrides each source's own."""
    root: ET.Element | None = None
    grid = None
    for index, ref in enumerate(bands, start=1):
        try:
            with rasterio.open(ref.dataset) as src:
                if not 1 <= ref.band <= src.count:
                    raise SourceError(f"{ref.dataset}: has no band {ref.band}")
                if src.dtypes[ref.band - 1] not in _GDAL_TYPES:
                    raise SourceError(f"{ref.dataset}: band {ref.band} is {src.dtypes[ref.band - 1]}, which cannot be stacked")
                if root is None:
                    grid = (src.width, src.height, src.transform, src.crs)
                    root = ET.Element("VRTDataset", rasterXSize=str(src.width), rasterYSize=str(src.height))
                    if src.crs is not None:
                        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = src.crs.to_wkt()
                    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in src.transform.to_gdal())
                elif (src.width, src.height, src.transform, src.crs) != grid:
                    raise SourceError(
                        f"{ref.dataset}: {src.width} x {src.height} px on its own grid does not match {bands[0].dataset} "
                        f"({grid[0]} x {grid[1]} px); bands of one scene must share size, transform and CRS"  # type: ignore[index]
                    )
                own = src.nodatavals[ref.band - 1]
                root.append(_band_element(index, ref, src, nodata if nodata is not None else own))
        except RasterioError as exc:
            raise SourceError(f"{ref.dataset}: not a readable raster ({first_line(exc)})") from exc
    if root is None:
        raise SourceError("no bands to stack")
    ET.indent(root)
    write_atomically(path, ET.tostring(root, encoding="utf-8") + b"\n")
    return Path(path)
