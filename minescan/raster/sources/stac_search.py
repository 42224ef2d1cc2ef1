"""Scenes from a STAC API search: the items a search finds, saved as item files a run scans.

A :class:`StacSearch` is one item search of a STAC API (collections, bbox,
datetime interval, a cloud-cover limit, a cap on the items).  Its values are
checked when it is made; a bad one raises :class:`SearchValueError`, which
names the setting as this API spells it (``bbox``) so the command line can
say its flag instead.  :func:`search_scenes` runs the search with
pystac-client and saves each item found as ``<folder>/<safe item id>.json``
(pystac's own JSON, asset hrefs made absolute against the item's URL, so
relative hrefs keep resolving), and returns those paths.  Invariants:

- the paths come in the search's order, one per distinct item (collection and
  id), and the same search answered the same way gives the same paths with the
  same content: a file is rewritten only when its item changed, so the rerun
  of a run resumes its journal, whose keys are these paths;
- every fault is one :class:`~minescan.raster.sources.source.SourceError`
  line naming the value and where it came from: an API that cannot be
  reached, a URL that is not a STAC API with item search, a search the API
  refuses, and a search that finds nothing (a run with nothing to scan);
- items are not judged here: one without red, green and blue assets fails
  when its scene is resolved, like any other input.

The cloud-cover limit (``eo:cloud_cover`` below ``max_cloud``) goes to the
API through the ``query`` extension, else the ``filter`` extension (CQL2
JSON), whichever the landing page declares; an API with neither cannot take
the limit.  pystac-client is imported when a search runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from minescan.defaults import DEFAULTS
from minescan.errors import SettingError
from minescan.raster.sources.source import SourceError, first_line, safe_name
from minescan.raster.sources.stac import is_url

if TYPE_CHECKING:
    import pystac

_BBOX_FORMAT = "expected 4 numbers west,south,east,north in degrees, e.g. 11.0,46.0,11.5,46.4"
_DATETIME_FORMAT = ("expected an RFC 3339 date or date-time, or an interval of two joined by '/' with '..' for an "
                    "open end, e.g. 2024-06-01/2024-08-31 or 2024-06-01T00:00:00Z/..")
# What pystac-client accepts: a year, a month, a day, or a full date-time with an optional UTC offset.
_MOMENT = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?)?)?)?$")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


class SearchValueError(SourceError, SettingError):
    """A search setting that cannot be used (:class:`~minescan.errors.SettingError`: named as the API spells it,
    ``max_cloud``)."""


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in degrees as four numbers, checked by :func:`check_bbox`."""
    try:
        numbers = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SearchValueError("bbox", text, _BBOX_FORMAT) from None
    check_bbox(numbers, text)
    return numbers  # type: ignore[return-value]


def check_bbox(bbox: Sequence[float], text: str | None = None) -> None:
    """Four finite numbers, west and east in [-180, 180], south below north in [-90, 90], west != east.

    West greater than east is a box across the antimeridian, as the STAC API
    specification allows.  ``text`` is how the caller spelled it, for the message.
    """
    value = text if text is not None else ",".join(f"{v:g}" for v in bbox)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        raise SearchValueError("bbox", value, _BBOX_FORMAT)
    west, south, east, north = bbox
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise SearchValueError("bbox", value, "west and east must lie in [-180, 180] degrees of longitude")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise SearchValueError("bbox", value, "south and north must lie in [-90, 90] degrees of latitude")
    if south >= north:
        raise SearchValueError("bbox", value, "south must be below north (the order is west,south,east,north)")
    if west == east:
        raise SearchValueError("bbox", value, "west and east must differ (west > east is a box across the antimeridian)")


def _moment(part: str, text: str) -> datetime | None:
    """The start of one end of a datetime interval (UTC when no offset is given); None for an open end."""
    if part in ("", ".."):
        return None
    match = _MOMENT.match(part)
    if not match:
        raise SearchValueError("datetime", text, _DATETIME_FORMAT)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = timezone.utc
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
                        int(float(fraction or 0) * 1e6), tzinfo=tz)
    except ValueError as exc:
        raise SearchValueError("datetime", text, f"{part} is not a date ({exc})") from None


def check_datetime(text: str) -> str:
    """``text`` if it is a datetime or interval the STAC API takes (see ``_DATETIME_FORMAT``), start not after end."""
    parts = text.strip().split("/")
    if not text.strip() or len(parts) > 2:
        raise SearchValueError("datetime", text, _DATETIME_FORMAT)
    bounds = [_moment(part.strip(), text) for part in parts]
    if all(bound is None for bound in bounds):
        raise SearchValueError("datetime", text, "an interval needs at least one end")
    if len(bounds) == 2 and bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise SearchValueError("datetime", text, "the interval starts after it ends")
    return "/".join(part.strip() for part in parts)


@dataclass(frozen=True)
class StacSearch:
    """One item search of the STAC API at ``url``; every value checked when made (:class:`SearchValueError`).

    ``bbox`` is west, south, east, north in degrees (see :func:`check_bbox`);
    ``datetime`` a STAC datetime or interval (:func:`check_datetime`);
    ``max_cloud`` keeps items whose ``eo:cloud_cover`` is below it (percent);
    ``max_items`` caps how many items the search returns.  None: no such limit.
    """

    url: str
    collections: tuple[str, ...] = (DEFAULTS.stac_collection,)
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_cloud: float | None = None
    max_items: int = DEFAULTS.stac_max_items
    timeout: float = DEFAULTS.stac_timeout

    def __post_init__(self) -> None:
        if not is_url(self.url):
            raise SearchValueError("url", self.url, "a STAC API is named by its http:// or https:// URL")
        if isinstance(self.collections, str) or not self.collections or not all(
                isinstance(c, str) and c.strip() for c in self.collections):
            raise SearchValueError("collections", self.collections, "give one or more collection ids")
        if self.bbox is not None:
            check_bbox(self.bbox)
            object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))
        if self.datetime is not None:
            object.__setattr__(self, "datetime", check_datetime(self.datetime))
        if self.max_cloud is not None and not (isinstance(self.max_cloud, (int, float)) and 0 <= self.max_cloud <= 100):
            raise SearchValueError("max_cloud", self.max_cloud, "a cloud cover in percent, in [0, 100]")
        if isinstance(self.max_items, bool) or not isinstance(self.max_items, int) or self.max_items < 1:
            raise SearchValueError("max_items", self.max_items, "at least 1 item")
        if not self.timeout > 0:
            raise SearchValueError("timeout", self.timeout, "seconds, more than 0")

    def describe(self) -> str:
        """The search's parameters in words, for messages."""
        words = [f"collection{'s' if len(self.collections) > 1 else ''} {', '.join(self.collections)}"]
        if self.bbox is not None:
            words.append("bbox " + ",".join(f"{v:g}" for v in self.bbox))
        if self.datetime is not None:
            words.append(f"datetime {self.datetime}")
        if self.max_cloud is not None:
            words.append(f"eo:cloud_cover < {self.max_cloud:g}")
        return ", ".join(words)


def _unreachable(exc: BaseException) -> str | None:
    """Why the API could not be reached (``[Errno 111] Connection refused``), or None if it answered."""
    import requests

    cause = exc.__cause__ or exc.__context__
    if not isinstance(cause, (requests.ConnectionError, requests.Timeout)):
        return None
    found = _ERRNO.search(str(cause))
    return found.group(0).strip() if found else f"{type(cause).__name__}: {first_line(cause)}"


def _api_reason(exc: BaseException) -> str:
    """An APIError in one line: the HTTP status and the first line of the answer."""
    status = getattr(exc, "status_code", None)
    text = first_line(exc) if str(exc).strip() else "no message"
    return f"HTTP {status}: {text}" if status else text


def search_items(search: StacSearch) -> list["pystac.Item"]:
    """The items ``search`` finds, in the API's order, at most ``max_items``, each distinct item once.

    Raises :class:`~minescan.raster.sources.source.SourceError` as the module
    docstring lists; pystac-client's warnings are not let through.
    """
    import pystac
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.errors import ClientTypeError
    from pystac_client.exceptions import APIError

    where = f"STAC API {search.url}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            client = Client.open(search.url, timeout=search.timeout)
        except APIError as exc:
            reason = _unreachable(exc)
            if reason is not None:
                raise SourceError(f"{where}: cannot be reached ({reason})") from None
            if getattr(exc, "status_code", None):
                raise SourceError(f"{where}: not a STAC API (its landing page answered {_api_reason(exc)})") from None
            raise SourceError(f"{where}: not a STAC API (its landing page is not JSON: {first_line(exc)})") from None
        except (ClientTypeError, pystac.STACError, pystac.STACTypeError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{where}: not a STAC API (its landing page is not a STAC catalog: {first_line(exc)})") from None
        if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            raise SourceError(f"{where}: not a STAC API with item search (its landing page does not declare the "
                              "item-search conformance class)")
        limits: dict = {}
        if search.max_cloud is not None:
            if client.conforms_to(ConformanceClasses.QUERY):
                limits["query"] = {"eo:cloud_cover": {"lt": search.max_cloud}}
            elif client.conforms_to(ConformanceClasses.FILTER):
                limits["filter"] = {"op": "<", "args": [{"property": "eo:cloud_cover"}, search.max_cloud]}
                limits["filter_lang"] = "cql2-json"
            else:
                raise SourceError(f"{where}: cannot select items by eo:cloud_cover < {search.max_cloud:g}: the API "
                                  "declares neither the query nor the filter extension; search without a cloud limit")
        try:
            found = client.search(collections=list(search.collections), bbox=search.bbox, datetime=search.datetime,
                                  max_items=search.max_items, limit=min(search.max_items, 100), **limits)
            items = list(found.items())
        except APIError as exc:
            reason = _unreachable(exc)
            if reason is not None:
                raise SourceError(f"{where}: cannot be reached during the search ({reason})") from None
            raise SourceError(f"{where}: the search for {search.describe()} failed ({_api_reason(exc)})") from None
        except (pystac.STACError, pystac.STACTypeError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{where}: the search answered with something that is not STAC items ({first_line(exc)})") from None
    seen: set[tuple[str | None, str]] = set()
    distinct = []
    for item in items:
        if (item.collection_id, item.id) not in seen:
            seen.add((item.collection_id, item.id))
            distinct.append(item)
    return distinct


def save_items(items: Iterable["pystac.Item"], folder: str | Path) -> list[Path]:
    """Each item as ``<folder>/<safe item id>.json`` (see the module docstring); the paths, absolute, in order.

    Two items whose ids make the same file name (the same id in two
    collections) are told apart by a hash of collection and id.  Asset hrefs
    are made absolute against the item's self link when it has one; an item
    without one keeps them as they are.
    """
    from minescan.results.atomic import write_atomically

    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    names: set[str] = set()
    for item in items:
        name = safe_name(item.id)
        if name in names:
            name += "-" + hashlib.sha256(f"{item.collection_id}/{item.id}".encode()).hexdigest()[:8]
        names.add(name)
        if item.get_self_href() is not None:
            item.make_asset_hrefs_absolute()
        data = (json.dumps(item.to_dict(transform_hrefs=False), indent=2) + "\n").encode()
        path = folder / f"{name}.json"
        if not path.is_file() or path.read_bytes() != data:
            write_atomically(path, data)
        paths.append(path)
    return paths


def search_scenes(search: StacSearch, folder: str | Path) -> list[Path]:
    """Run ``search`` and save what it finds into ``folder`` (see the module docstring); an empty result is an error."""
    items = search_items(search)
    if not items:
        raise SourceError(f"STAC API {search.url}: no items found for {search.describe()}; a run needs at least one scene")
    return save_items(items, folder)
