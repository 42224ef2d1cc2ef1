"""STAC items: a scene described as JSON, its bands as asset links.

An item is read with pystac from a local file or from an ``http(s)://`` URL
(a ``.json`` URL, or a STAC API's ``.../collections/<id>/items/<id>``; see
:func:`is_item_url`).  An item without ``stac_version`` is read as STAC 1.0.0;
items of older versions are migrated by pystac.

The red, green and blue assets are found by key (``red``/``B04``/``B4``
and so on), else by their ``eo:bands`` common name or band name, and
stacked in a VRT.  Asset hrefs may be relative to the item (its file's
folder, or its URL), absolute paths, ``file://`` URLs, or remote:
``https://`` and ``s3://``/``gs://`` become GDAL's ``/vsicurl/``,
``/vsis3/``, ``/vsigs/`` paths, read on demand like local files; so an item
read by URL whose hrefs are relative reads its bands through ``/vsicurl/``.
A ``raster:bands`` entry's ``offset`` and ``scale`` (e.g. -0.1 and 0.0001 for
Sentinel-2 L2A from baseline 04.00) give the DN offset, offset / scale; its
``nodata`` the nodata value (else Sentinel-2's 0).  The ``eo`` and ``raster``
fields are read whether or not the item declares those extensions.  An ``scl``
asset (Sentinel-2 L2A's scene classification) becomes the scene's quality mask
(:mod:`minescan.quality`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlparse

from rasterio.enums import ColorInterp

from minescan.raster.sources.source import SENTINEL2_NODATA, Source, SourceError, first_line, safe_name
from minescan.raster.sources.vrt import BandRef, stack_path, write_stack

SCL_KEYS = ("scl", "scl_20m")  # Sentinel-2 L2A's scene classification asset (Earth Search, Planetary Computer: "SCL")

if TYPE_CHECKING:
    import pystac
    from pystac.extensions.eo import Band

_WANTED = (
    ("red", ("red", "b04", "b4"), ColorInterp.red),
    ("green", ("green", "b03", "b3"), ColorInterp.green),
    ("blue", ("blue", "b02", "b2"), ColorInterp.blue),
)
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
# A STAC API serves one item at <root>/collections/<collection id>/items/<item id>.
_API_ITEM = re.compile(r"/collections/[^/]+/items/[^/]+/?$")


def is_url(text: str) -> bool:
    """Whether ``text`` is an ``http://`` or ``https://`` URL."""
    return urlparse(text).scheme in ("http", "https")


def is_item_url(text: str) -> bool:
    """Whether ``text`` is the URL of a STAC item: http(s), a path ending in ``.json`` or a STAC API item path.

    Any other http(s) URL is a remote raster (see :mod:`minescan.raster.sources.resolve`).
    """
    if not is_url(text):
        return False
    path = urlparse(text).path
    return path.lower().endswith(".json") or bool(_API_ITEM.search(path))


def gdal_href(href: str, base: Path | str) -> str:
    """An asset href as a name GDAL opens (see the module docstring).

    A relative href is resolved against ``base``: the item's folder (a path), or
    the item's own URL (a string: ``urljoin`` semantics, so give the item's URL,
    not its folder's).
    """
    url = urlparse(href)
    if url.scheme in _VSI:
        return _VSI[url.scheme] + (href if url.scheme.startswith("http") else f"{url.netloc}{url.path}")
    if url.scheme == "file":
        return unquote(url.path)
    if url.scheme and len(url.scheme) > 1:  # one letter is a Windows drive
        raise SourceError(f"asset href {href!r}: scheme {url.scheme!r} is not supported")
    if isinstance(base, str) and is_url(base) and not Path(href).is_absolute():
        return gdal_href(urljoin(base, href), base)
    return str((Path(base) / href).absolute())


def _eo_bands(asset: "pystac.Asset") -> list:
    """The asset's ``eo:bands`` (pystac's :class:`~pystac.extensions.eo.Band`); [] when absent or malformed."""
    from pystac.extensions.eo import EOExtension

    try:
        bands = EOExtension.ext(asset, add_if_missing=True).bands or []
        return [band for band in bands if isinstance(band.properties, dict)]
    except (TypeError, AttributeError, KeyError):
        return []


def _names(band: "Band") -> tuple[str | None, str | None]:
    """(common name, name) of one ``eo:bands`` entry, None where absent."""
    from pystac.errors import RequiredPropertyMissing

    try:
        name = band.name
    except RequiredPropertyMissing:
        name = None
    return band.common_name, (str(name) if name is not None else None)


def _find(assets: dict[str, "pystac.Asset"], common: str, names: tuple[str, ...]) -> tuple[str, "pystac.Asset"]:
    """The asset for one colour: by key first, then by a single ``eo:bands`` entry."""
    for key, asset in assets.items():
        if key.lower() in names:
            return key, asset
    for key, asset in assets.items():
        bands = _eo_bands(asset)
        if len(bands) == 1:
            common_name, name = _names(bands[0])
            if common_name == common or (name or "").lower() in names:
                return key, asset
    raise SourceError(f"no {common} asset (keys: {', '.join(assets) or 'none'})")


def _radiometry(assets: list["pystac.Asset"]) -> tuple[float | None, float | str | None]:
    """(DN offset, nodata) the assets' ``raster:bands`` agree on; None where absent or disagreeing.

    ``nodata`` may be one of the extension's strings (``"nan"``, ``"inf"``, ``"-inf"``), which ``float`` reads.
    """
    from pystac.extensions.raster import RasterExtension

    offsets, nodatas = set(), set()
    for asset in assets:
        try:
            bands = RasterExtension.ext(asset, add_if_missing=True).bands or []
            band = bands[0] if bands and isinstance(bands[0].properties, dict) else None
        except (TypeError, AttributeError, KeyError):  # a malformed raster:bands is as good as none
            band = None
        offset = band.offset if band is not None else None
        scale = (band.scale if band is not None else None) or 1.0
        offsets.add(offset / scale if offset is not None else None)
        nodatas.add(band.nodata if band is not None else None)
    offset = offsets.pop() if len(offsets) == 1 else None
    nodata = nodatas.pop() if len(nodatas) == 1 else None
    return (round(offset, 6) if offset is not None else None), nodata


def _description(asset: "pystac.Asset", key: str) -> str:
    """The VRT band's description: the asset's first ``eo:bands`` name, else its key."""
    bands = _eo_bands(asset)
    return (_names(bands[0])[1] if bands else None) or key


def _reason(exc: BaseException) -> str:
    """What went wrong reading an item, in one line (pystac wraps HTTP errors in a bare ``Exception``)."""
    return first_line(exc.__cause__ if exc.__cause__ is not None and type(exc) is Exception else exc)


def read_item(text: str) -> "pystac.Item":
    """The STAC item at ``text``, a local file or an http(s) URL, read by pystac; relative asset hrefs keep resolving.

    Raises :class:`SourceError` (one line naming ``text``) when it cannot be
    read or is not a STAC item with assets.
    """
    import pystac

    href = text if is_url(text) else str(Path(text).absolute())
    try:
        data = pystac.StacIO.default().read_json(href)
    except FileNotFoundError:
        raise SourceError(f"STAC item not found: {href}") from None
    except Exception as exc:  # noqa: BLE001 - local files, urllib3 and pystac raise many kinds; each becomes one line
        raise SourceError(f"{text}: not a readable STAC item ({_reason(exc)})") from exc
    if not isinstance(data, dict) or data.get("type") != "Feature" or not isinstance(data.get("assets"), dict):
        raise SourceError(f"{text}: not a STAC item (expected a GeoJSON Feature with 'assets')")
    data.setdefault("stac_version", "1.0.0")
    try:
        return pystac.Item.from_dict(data, href=href, preserve_dict=False)
    except (pystac.STACError, pystac.STACTypeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SourceError(f"{text}: not a STAC item ({first_line(exc)})") from exc


def resolve_stac(text: str, vrt_dir: Path) -> Source:
    """A STAC item, a local file or an http(s) URL (see the module docstring)."""
    item = read_item(text)
    base: Path | str = text if is_url(text) else Path(text).absolute().parent
    try:
        found = [_find(item.assets, common, names) for common, names, _ in _WANTED]
    except SourceError as exc:
        raise SourceError(f"{text}: {exc}") from None
    offset, nodata = _radiometry([asset for _, asset in found])
    nodata = float(nodata) if nodata is not None else SENTINEL2_NODATA
    refs = [
        BandRef(gdal_href(asset.get_absolute_href() or asset.href, base), 1, _description(asset, key), color)
        for (key, asset), (_, _, color) in zip(found, _WANTED)
    ]
    stem = Path(urlparse(text).path).stem if is_url(text) else Path(text).stem
    product_id = safe_name(str(item.id or stem))
    vrt = write_stack(stack_path(vrt_dir, product_id, text), refs, nodata=nodata)
    scl = next((asset for key, asset in item.assets.items() if key.lower() in SCL_KEYS), None)
    return Source(text, "stac", vrt, product_id, bands=(1, 2, 3), offset=offset, nodata=nodata,
                  scl=gdal_href(scl.get_absolute_href() or scl.href, base) if scl is not None else None)
