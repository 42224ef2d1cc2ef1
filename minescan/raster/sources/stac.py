"""STAC items: a scene described as JSON, its bands as asset links.

The red, green and blue assets are found by key (``red``/``B04``/``B4``
and so on), else by their ``eo:bands`` common name or band name, and
stacked in a VRT.  Asset hrefs may be relative to the item file, absolute
paths, ``file://`` URLs, or remote: ``https://`` and ``s3://``/``gs://``
become GDAL's ``/vsicurl/``, ``/vsis3/``, ``/vsigs/`` paths, read on demand
like local files.  A ``raster:bands`` entry's ``offset`` and ``scale`` (e.g.
-0.1 and 0.0001 for Sentinel-2 L2A from baseline 04.00) give the DN offset,
offset / scale; its ``nodata`` the nodata value (else Sentinel-2's 0).
Only a local item file is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from rasterio.enums import ColorInterp

from minescan.raster.sources.source import SENTINEL2_NODATA, Source, SourceError, first_line, safe_name
from minescan.raster.sources.vrt import BandRef, stack_path, write_stack

_WANTED = (
    ("red", ("red", "b04", "b4"), ColorInterp.red),
    ("green", ("green", "b03", "b3"), ColorInterp.green),
    ("blue", ("blue", "b02", "b2"), ColorInterp.blue),
)
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}


def gdal_href(href: str, base: Path) -> str:
    """An asset href as a name GDAL opens (see the module docstring)."""
    url = urlparse(href)
    if url.scheme in _VSI:
        return _VSI[url.scheme] + (href if url.scheme.startswith("http") else f"{url.netloc}{url.path}")
    if url.scheme == "file":
        return unquote(url.path)
    if url.scheme and len(url.scheme) > 1:  # one letter is a Windows drive
        raise SourceError(f"asset href {href!r}: scheme {url.scheme!r} is not supported")
    return str((base / href).absolute())


def _asset_bands(asset: dict) -> list[dict]:
    bands = asset.get("eo:bands") or []
    return bands if isinstance(bands, list) else []


def _find(assets: dict, common: str, names: tuple[str, ...]) -> tuple[str, dict]:
    """The asset for one colour: by key first, then by a single ``eo:bands`` entry."""
    for key, asset in assets.items():
        if key.lower() in names:
            return key, asset
    for key, asset in assets.items():
        bands = _asset_bands(asset)
        if len(bands) == 1 and (bands[0].get("common_name") == common or str(bands[0].get("name", "")).lower() in names):
            return key, asset
    raise SourceError(f"no {common} asset (keys: {', '.join(assets) or 'none'})")


def _radiometry(assets: list[dict]) -> tuple[float | None, float | None]:
    """(DN offset, nodata) the assets' ``raster:bands`` agree on; None where absent or disagreeing."""
    offsets, nodatas = set(), set()
    for asset in assets:
        band = (asset.get("raster:bands") or [{}])[0]
        scale = band.get("scale") or 1.0
        offsets.add(band["offset"] / scale if "offset" in band else None)
        nodatas.add(band.get("nodata"))
    offset = offsets.pop() if len(offsets) == 1 else None
    nodata = nodatas.pop() if len(nodatas) == 1 else None
    return (round(offset, 6) if offset is not None else None), nodata


def resolve_stac(text: str, vrt_dir: Path) -> Source:
    """A STAC item JSON file (see the module docstring)."""
    path = Path(text).absolute()
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"STAC item not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"{text}: not a readable STAC item ({first_line(exc)})") from exc
    if not isinstance(item, dict) or item.get("type") != "Feature" or not isinstance(item.get("assets"), dict):
        raise SourceError(f"{text}: not a STAC item (expected a GeoJSON Feature with 'assets')")
    try:
        found = [_find(item["assets"], common, names) for common, names, _ in _WANTED]
    except SourceError as exc:
        raise SourceError(f"{text}: {exc}") from None
    offset, nodata = _radiometry([asset for _, asset in found])
    nodata = float(nodata) if nodata is not None else SENTINEL2_NODATA
    refs = [
        BandRef(gdal_href(str(asset.get("href", "")), path.parent), 1, (_asset_bands(asset) or [{}])[0].get("name") or key, color)
        for (key, asset), (_, _, color) in zip(found, _WANTED)
    ]
    product_id = safe_name(str(item.get("id") or path.stem))
    vrt = write_stack(stack_path(vrt_dir, product_id, text), refs, nodata=nodata)
    return Source(text, "stac", vrt, product_id, bands=(1, 2, 3), offset=offset, nodata=nodata)
