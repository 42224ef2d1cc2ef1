"""Scenes stored one band per file: a folder, or a comma-separated list.

Sentinel-2 band files carry the band in their name (``..._B04_10m.jp2``,
``B04.tif``, ``T33UUP_20230101T000000_B4.TIF``); the red (B04), green (B03)
and blue (B02) files are found by that token and stacked, in that order, in a
VRT: nothing is copied.  The product id is what the files' names share, else
the folder's name.  DN 0 is nodata unless the files say otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError

from minescan.raster.sources.source import SENTINEL2_NODATA, Source, SourceError, common_stem, first_line, safe_name
from minescan.raster.sources.vrt import BandRef, stack_path, write_stack

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
RGB = (("B04", ColorInterp.red), ("B03", ColorInterp.green), ("B02", ColorInterp.blue))
_BAND_TOKEN = re.compile(r"(?:^|[_.\- ])B0?(\d{1,2}A?)(?=$|[_.\- ])", re.I)


def band_of(name: str) -> str | None:
    """The Sentinel-2 band a file name names, as ``B04``, or None."""
    found = _BAND_TOKEN.findall(Path(name).stem)
    if len(found) != 1:
        return None
    number = found[0].upper()
    return f"B{number.zfill(2) if number[-1].isdigit() else number.zfill(3)}"


def pick_rgb(files: list[str], where: str) -> list[str]:
    """The B04, B03, B02 files among ``files``, in that order."""
    picked = []
    for band, _ in RGB:
        hits = [f for f in files if band_of(f) == band]
        if not hits:
            raise SourceError(f"{where}: no {band} file (looked for names like T33UUP_..._{band}_10m.jp2 or {band}.tif)")
        if len(hits) > 1:
            raise SourceError(f"{where}: several {band} files: {', '.join(Path(h).name for h in hits)}")
        picked.append(hits[0])
    return picked


def stack_rgb(text: str, files: list[str], fallback_id: str, vrt_dir: Path, kind: str) -> Source:
    """Stack the red, green and blue band files into ``vrt_dir/<product id>.vrt``."""
    red, green, blue = pick_rgb(files, text)
    product_id = safe_name(common_stem([Path(f).stem for f in (red, green, blue)]) or fallback_id)
    refs = [BandRef(f, 1, band, color) for f, (band, color) in zip((red, green, blue), RGB)]
    nodata = _own_nodata(red)
    vrt = write_stack(stack_path(vrt_dir, product_id, text), refs, nodata=nodata)
    return Source(text, kind, vrt, product_id, bands=(1, 2, 3), nodata=nodata)


def _own_nodata(path: str) -> float:
    """The file's nodata value, else Sentinel-2's DN 0."""
    try:
        with rasterio.open(path) as src:
            return src.nodata if src.nodata is not None else SENTINEL2_NODATA
    except RasterioError as exc:
        raise SourceError(f"{path}: not a readable raster ({first_line(exc)})") from exc


def resolve_folder(folder: Path, vrt_dir: Path) -> Source:
    """A folder of per-band files."""
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    return stack_rgb(str(folder), files, folder.name, vrt_dir, "bands")


def resolve_list(text: str, vrt_dir: Path) -> Source:
    """``a_B04.jp2,a_B03.jp2,a_B02.jp2``: per-band files named in one input."""
    files = [str(Path(f.strip()).absolute()) for f in text.split(",") if f.strip()]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise SourceError(f"band file not found: {missing[0]}")
    return stack_rgb(text, files, Path(files[0]).stem, vrt_dir, "bands")
