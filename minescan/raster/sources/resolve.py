"""From what the user typed to :class:`~minescan.raster.sources.source.Source` values.

Inputs come from the command line and from manifest files (one input per
line; blank lines and ``#`` comments skipped; relative paths are relative to
the manifest's folder).  Each input is recognised by its shape:

- ``a_B04.jp2,a_B03.jp2,a_B02.jp2`` (commas): per-band files;
- a ``.SAFE`` folder, ``MTD_MSIL*.xml``, a ``.zip`` or ``SENTINEL2_L*:`` string: a product;
- a ``.json`` file, or an ``http(s)://`` URL of one or of a STAC API's
  ``.../collections/<id>/items/<id>``: a STAC item;
- any other folder: per-band files inside it;
- a remote raster (``https://``, ``/vsicurl/...``): wrapped in a VRT;
- anything else: a raster file scanned as it is (GeoTIFF, COG, VRT, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from minescan.raster.sources.bandfiles import resolve_folder, resolve_list
from minescan.raster.sources.safe import is_safe, resolve_safe
from minescan.raster.sources.source import Source, SourceError, first_line, safe_name
from minescan.raster.sources.stac import gdal_href, is_item_url, resolve_stac
from minescan.raster.sources.vrt import BandRef, stack_path, write_stack


def read_manifest(path: str | os.PathLike[str]) -> list[str]:
    """The inputs listed in a manifest file, relative paths made absolute."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SourceError(f"manifest {path}: cannot read ({exc.strerror or exc})") from exc
    base = path.absolute().parent
    texts = (line.split("#", 1)[0].strip() for line in lines)
    return [absolute_input(text, base) for text in texts if text]


def absolute_input(text: str, base: Path) -> str:
    """One spelling per input, so that a rerun finds its journal entries: local paths made absolute against ``base``."""
    return ",".join(_absolute(part.strip(), base) for part in text.split(","))


def _absolute(text: str, base: Path) -> str:
    """``text`` as an absolute local path, unless it is remote or a GDAL dataset string."""
    if _is_remote(text) or ":" in text.split("/", 1)[0]:
        return text
    return str((base / text).absolute())


def _is_remote(text: str) -> bool:
    return text.startswith(("/vsi", "http://", "https://", "s3://", "gs://"))


def _remote(text: str, vrt_dir: Path) -> Source:
    """A remote raster wrapped band for band, so the scan reads a local file."""
    dataset = gdal_href(text, Path.cwd()) if not text.startswith("/vsi") else text
    try:
        with rasterio.open(dataset) as src:
            refs = [BandRef(dataset, i, src.descriptions[i - 1] or "", src.colorinterp[i - 1]) for i in range(1, src.count + 1)]
            nodata = src.nodata
    except RasterioError as exc:
        raise SourceError(f"{text}: not a readable raster ({first_line(exc)})") from exc
    product_id = safe_name(Path(dataset.split("?", 1)[0]).stem)
    return Source(text, "remote", write_stack(stack_path(vrt_dir, product_id, text), refs, nodata=nodata), product_id, nodata=nodata)


def resolve(text: str, vrt_dir: Path) -> Source:
    """Resolve one input spelled by :func:`absolute_input` (see the module docstring); VRTs go to ``vrt_dir``."""
    vrt_dir.mkdir(parents=True, exist_ok=True)
    if "," in text:
        return resolve_list(text, vrt_dir)
    if is_safe(text):
        return resolve_safe(text, vrt_dir)
    if is_item_url(text):
        return resolve_stac(text, vrt_dir)
    if _is_remote(text):
        return _remote(text, vrt_dir)
    path = Path(text)
    if path.suffix.lower() == ".json":
        return resolve_stac(text, vrt_dir)
    if path.is_dir():
        return resolve_folder(path, vrt_dir)
    if not path.is_file():
        raise SourceError(f"scene not found: {text}")
    return Source(text, "raster", path, safe_name(path.stem))
