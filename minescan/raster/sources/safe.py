"""Sentinel-2 ``.SAFE`` products (L1C and L2A) through GDAL's SENTINEL2 driver.

GDAL opens a product by its main metadata file (``MTD_MSIL2A.xml``,
``MTD_MSIL1C.xml``) and offers per-resolution subdatasets such as
``SENTINEL2_L2A:/abs/MTD_MSIL2A.xml:10m:EPSG_32733``; the 10 m one holds
B4, B3, B2, B8 (in that order), each band named by a ``BANDNAME`` item.
Three things GDAL leaves to the reader:

- the radiometric offset: from processing baseline 04.00 on, DN =
  reflectance x 10000 - offset with ``BOA_ADD_OFFSET`` (L2A) or
  ``RADIO_ADD_OFFSET`` (L1C) = -1000, exposed as band metadata but not
  applied; it is returned here as the scan's offset;
- nodata: DN 0 (``SPECIAL_VALUE_NODATA``) is not set as the bands' nodata;
- missing band files read as zeros with only a warning, so an incomplete
  download would "scan" as an empty scene: they are checked here.

The red, green and blue bands are wrapped in a VRT in ``vrt_dir``, which the
scan opens like any raster.  A product is given as its ``.SAFE`` folder, its
main metadata file, a ``.zip`` of it, or a ``SENTINEL2_L1C:``/``SENTINEL2_L2A:``
subdataset string.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from minescan.raster.sources.source import SENTINEL2_NODATA, Source, SourceError, first_line, safe_name
from minescan.raster.sources.vrt import BandRef, stack_path, write_stack

MAIN_METADATA = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
OFFSET_BASELINE = 4.0
_SUBDATASET = re.compile(r"^SENTINEL2_L(?:1C|2A):(?P<xml>.+):(?P<res>10m|20m|60m|TCI)(?::EPSG_\d+)?$", re.I)
_RGB = (("B4", "B04", ColorInterp.red), ("B3", "B03", ColorInterp.green), ("B2", "B02", ColorInterp.blue))
_OFFSET_ITEMS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")


def is_safe(text: str) -> bool:
    """Whether ``text`` names a product this module reads."""
    path = Path(text)
    if _SUBDATASET.match(text) or path.name in MAIN_METADATA:
        return True
    if path.is_dir():
        return path.suffix.upper() == ".SAFE" or any((path / name).is_file() for name in MAIN_METADATA)
    return path.suffix.lower() == ".zip" and path.is_file()


def _main_metadata(text: str) -> tuple[str, str | None]:
    """(main metadata file as GDAL opens it, the subdataset asked for or None)."""
    match = _SUBDATASET.match(text)
    if match:
        return match.group("xml"), text
    path = Path(text).absolute()
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if Path(n).name in MAIN_METADATA and n.count("/") == 1]
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{text}: not a readable zip ({first_line(exc)})") from exc
        if not members:
            raise SourceError(f"{text}: no <product>.SAFE/{'|'.join(MAIN_METADATA)} inside")
        return f"/vsizip/{path}/{members[0]}", None
    if path.is_dir():
        found = [path / name for name in MAIN_METADATA if (path / name).is_file()]
        if not found:
            raise SourceError(f"{text}: no {' or '.join(MAIN_METADATA)} in this .SAFE folder")
        path = found[0]
    if not path.is_file():
        raise SourceError(f"product metadata not found: {path}")
    return str(path), None


def _missing_band_file(xml: str) -> str | None:
    """The first red/green/blue image file the product lists but lacks on disk (local products only)."""
    path = Path(xml)
    if not path.is_file():
        return None
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise SourceError(f"{xml}: not valid XML ({first_line(exc)})") from exc
    for element in tree.iter():
        if element.tag.rsplit("}", 1)[-1] not in ("IMAGE_FILE", "IMAGE_FILE_2A") or not element.text:
            continue
        image = element.text.strip()
        if re.search(r"_B0[234](_10m)?$", image) and not (path.parent / f"{image}.jp2").is_file():
            return f"{image}.jp2"
    return None


def _image_files(xml: str) -> list[str]:
    """The image files (no extension, relative to the product root) the main metadata lists; [] if unreadable here."""
    text: bytes | None = None
    if xml.startswith("/vsizip/"):
        archive, _, member = xml.removeprefix("/vsizip/").partition(".zip/")
        try:
            with zipfile.ZipFile(archive + ".zip") as handle:
                text = handle.read(member)
        except (OSError, KeyError, zipfile.BadZipFile):
            return []
    elif Path(xml).is_file():
        text = Path(xml).read_bytes()
    if text is None:
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []
    return [e.text.strip() for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("IMAGE_FILE", "IMAGE_FILE_2A") and e.text]


def scl_dataset(xml: str) -> str | None:
    """The L2A scene classification layer (SCL, 20 m; else 60 m) as GDAL opens it, or None when the product has none.

    Read from the file the product lists (``.../IMG_DATA/R20m/<tile>_<date>_SCL_20m``), not from GDAL's 20 m
    subdataset, which would also open (and warn about) every other 20 m band.
    """
    files = _image_files(xml)
    root = xml.rsplit("/", 1)[0]
    for resolution in ("20m", "60m"):
        for image in files:
            if image.endswith(f"_SCL_{resolution}"):
                path = f"{root}/{image}.jp2"
                if path.startswith("/vsizip/") or Path(path).is_file():
                    return path
    return None


def _open(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the product container has no grid of its own
        try:
            return rasterio.open(name)
        except RasterioError as exc:
            raise SourceError(f"{name}: not a readable Sentinel-2 product ({first_line(exc)})") from exc


def _ten_metre(subdatasets: list[str], xml: str) -> str:
    choices = [s for s in subdatasets if ":10m:" in s or s.endswith(":10m")]
    if not choices:
        raise SourceError(f"{xml}: GDAL lists no 10 m subdataset (subdatasets: {', '.join(subdatasets) or 'none'})")
    if len(choices) > 1:
        raise SourceError(f"{xml}: 10 m data in several CRSs; pass one subdataset: {', '.join(choices)}")
    return choices[0]


def _offset(src, indexes: list[int], baseline: float | None) -> float:
    """The DN offset of the red, green and blue bands (0 before baseline 04.00)."""
    if baseline is None or baseline < OFFSET_BASELINE:
        return 0.0
    found = set()
    for index in indexes:
        tags = src.tags(index)
        found.add(next((float(tags[k]) for k in _OFFSET_ITEMS if k in tags), 0.0))
    if len(found) > 1:
        raise SourceError(f"{src.name}: red, green and blue have different offsets {sorted(found)}; give the offset explicitly")
    return found.pop()


def resolve_safe(text: str, vrt_dir: Path) -> Source:
    """A ``.SAFE`` product (see the module docstring)."""
    xml, subdataset = _main_metadata(text)
    missing = _missing_band_file(xml)
    if missing:
        raise SourceError(f"{text}: product incomplete, {missing} is missing")
    with _open(xml) as product:
        tags = product.tags()
        subdataset = subdataset or _ten_metre(product.subdatasets, xml)
    folder = Path(xml.removeprefix("/vsizip/")).parent.name
    product_id = safe_name(re.sub(r"\.SAFE$", "", tags.get("PRODUCT_URI") or folder, flags=re.I))
    baseline = float(tags["PROCESSING_BASELINE"]) if re.fullmatch(r"\d+(\.\d+)?", tags.get("PROCESSING_BASELINE", "")) else None
    nodata = float(tags.get("SPECIAL_VALUE_NODATA", SENTINEL2_NODATA))
    with _open(subdataset) as src:
        names = [src.tags(i).get("BANDNAME", "") for i in range(1, src.count + 1)]
        indexes = []
        for short, long, _ in _RGB:
            if short not in names:
                raise SourceError(f"{subdataset}: has no band {long} (bands: {', '.join(names) or 'none'})")
            indexes.append(names.index(short) + 1)
        offset = _offset(src, indexes, baseline)
    refs = [BandRef(subdataset, index, long, color) for index, (_, long, color) in zip(indexes, _RGB)]
    vrt = write_stack(stack_path(vrt_dir, product_id, text), refs, nodata=nodata)
    return Source(text, "safe", vrt, product_id, bands=(1, 2, 3), offset=offset, nodata=nodata, scl=scl_dataset(xml))
