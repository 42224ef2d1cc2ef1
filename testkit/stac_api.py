"""A small STAC API on loopback, in the test process: real HTTP for pystac, pystac-client and GDAL's /vsicurl/.

:class:`StacApi` holds collections and items and serves, with Starlette under
uvicorn on ``127.0.0.1`` and an ephemeral port, in a child process
(:meth:`StacApi.serve`, which says why not a thread):

- ``/``: the landing page, ``conformsTo`` core, item-search, query,
  collections and ogcapi-features, with ``search`` links for GET and POST;
- ``/conformance``, ``/collections``, ``/collections/{id}``,
  ``/collections/{id}/items/{item id}``;
- ``/search`` (GET and POST): ``collections``, ``bbox`` (intersection with the
  item's bbox; west > east crosses the antimeridian), ``datetime`` (an
  instant or an interval, ``..`` for an open end), ``query`` on numeric
  properties (``lt``, ``lte``, ``gt``, ``gte``, ``eq``, ``neq``), ``limit``
  capped at ``page_size``, and a ``next`` link (a ``token`` offset; for POST
  a link with ``method`` and ``body``) until the last page, so clients page;
- ``/data/...``: the files under ``data_root`` with HTTP range requests
  (Starlette's ``FileResponse``: ``206 Partial Content`` for one range, as
  GDAL's ``/vsicurl/`` asks);
- ``/no-search/``: a landing page without item search (a STAC catalog that is
  not a STAC API with search).

Items are given as dicts whose asset hrefs are relative to a folder under
``data_root`` (:func:`publish_item` makes them from band files the project's
generators write); the API answers them with a ``self`` link to
``/collections/{id}/items/{item id}`` and the hrefs relative to it.  Every
request is recorded as (method, path, query, Range header, status); the test
reads the log with :func:`requests_seen`.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

STAC_VERSION = "1.0.0"
CONFORMS_TO = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
)
_OPS = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
        "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}


class BadRequest(ValueError):
    """A search parameter the API refuses (answered 400)."""


@dataclass
class StacApi:
    """Collections and items to serve (see the module docstring); ``page_size`` caps each search page."""

    data_root: Path
    page_size: int = 2
    collections: dict[str, dict] = field(default_factory=dict)
    items: list[tuple[str, dict]] = field(default_factory=list)  # (folder under data_root, item), in API order
    requests: list[tuple[str, str, str, str | None, int]] = field(default_factory=list)

    def add_item(self, folder: str, item: dict) -> None:
        """Serve ``item`` (its ``collection`` set; asset hrefs relative to ``data_root/folder``); its collection too."""
        collection = item["collection"]
        self.collections.setdefault(collection, {
            "type": "Collection", "stac_version": STAC_VERSION, "id": collection, "description": f"test collection {collection}",
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        })
        self.items.append((folder, item))

    # --- answers -----------------------------------------------------------------------------------------

    def _landing(self, base: str, search: bool = True) -> dict:
        links = [{"rel": "self", "href": f"{base}/", "type": "application/json"},
                 {"rel": "root", "href": f"{base}/", "type": "application/json"},
                 {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
                 {"rel": "data", "href": f"{base}/collections", "type": "application/json"}]
        if search:
            links += [{"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": method}
                      for method in ("GET", "POST")]
        return {"type": "Catalog", "stac_version": STAC_VERSION, "id": "minescan-test-api",
                "description": "a STAC API for tests", "conformsTo": list(CONFORMS_TO if search else CONFORMS_TO[:1]),
                "links": links}

    def _collection(self, base: str, collection: str) -> dict:
        answer = copy.deepcopy(self.collections[collection])
        answer["links"] = [{"rel": "self", "href": f"{base}/collections/{collection}"},
                           {"rel": "root", "href": f"{base}/"},
                           {"rel": "items", "href": f"{base}/collections/{collection}/items"}]
        return answer

    def _item(self, base: str, folder: str, item: dict) -> dict:
        """The item as the API answers it: a self link, asset hrefs relative to it (three levels below the root)."""
        answer = copy.deepcopy(item)
        collection = item["collection"]
        for asset in answer["assets"].values():
            if "://" not in asset["href"] and not asset["href"].startswith("/"):
                asset["href"] = f"../../../data/{folder}/{asset['href']}"
        answer["links"] = [{"rel": "self", "href": f"{base}/collections/{collection}/items/{item['id']}"},
                           {"rel": "collection", "href": f"{base}/collections/{collection}"},
                           {"rel": "root", "href": f"{base}/"}]
        return answer

    def matches(self, item: dict, params: dict[str, Any]) -> bool:
        """Whether ``item`` answers a search with ``params`` (parsed: lists, floats, a query dict)."""
        if params.get("collections") and item["collection"] not in params["collections"]:
            return False
        if params.get("bbox") is not None and not _intersects(params["bbox"], item["bbox"]):
            return False
        if params.get("datetime") is not None:
            start, end = params["datetime"]
            when = _instant(item["properties"]["datetime"])
            if (start is not None and when < start) or (end is not None and when > end):
                return False
        for name, conditions in (params.get("query") or {}).items():
            value = item["properties"].get(name)
            if value is None or not all(_OPS[op](value, limit) for op, limit in conditions.items()):
                return False
        return True

    def search(self, base: str, method: str, raw: dict[str, Any]) -> dict:
        """One page of a search; ``raw`` as sent (GET: strings, POST: JSON values)."""
        params = _parse(raw)
        found = [(folder, item) for folder, item in self.items if self.matches(item, params)]
        start = params["token"]
        size = min(params.get("limit") or self.page_size, self.page_size)
        page = found[start:start + size]
        links: list[dict[str, Any]] = [{"rel": "root", "href": f"{base}/"}]
        if start + size < len(found):
            if method == "GET":
                query = {k: v for k, v in raw.items() if k != "token"}
                links.append({"rel": "next", "href": f"{base}/search?{urlencode({**query, 'token': start + size})}",
                              "method": "GET", "type": "application/geo+json"})
            else:
                links.append({"rel": "next", "href": f"{base}/search", "method": "POST", "type": "application/geo+json",
                              "body": {**raw, "token": start + size}})
        return {"type": "FeatureCollection", "features": [self._item(base, folder, item) for folder, item in page],
                "links": links, "numberMatched": len(found), "numberReturned": len(page)}

    # --- the app -----------------------------------------------------------------------------------------

    def app(self) -> Any:
        """The Starlette app serving this API."""
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.requests import Request
        from starlette.responses import FileResponse, JSONResponse, Response
        from starlette.routing import Route

        api = self

        def base(request: Request) -> str:
            return str(request.base_url).rstrip("/")

        async def landing(request: Request) -> Response:
            return JSONResponse(api._landing(base(request)))

        async def landing_without_search(request: Request) -> Response:
            return JSONResponse(api._landing(base(request), search=False))

        async def conformance(request: Request) -> Response:
            return JSONResponse({"conformsTo": list(CONFORMS_TO)})

        async def collections(request: Request) -> Response:
            return JSONResponse({"collections": [api._collection(base(request), c) for c in api.collections],
                                 "links": [{"rel": "root", "href": f"{base(request)}/"}]})

        async def collection(request: Request) -> Response:
            name = request.path_params["collection"]
            if name not in api.collections:
                return JSONResponse({"code": "NotFound", "description": f"no collection {name}"}, 404)
            return JSONResponse(api._collection(base(request), name))

        async def item(request: Request) -> Response:
            for folder, found in api.items:
                if found["collection"] == request.path_params["collection"] and found["id"] == request.path_params["item"]:
                    return JSONResponse(api._item(base(request), folder, found), media_type="application/geo+json")
            return JSONResponse({"code": "NotFound", "description": "no such item"}, 404)

        async def search(request: Request) -> Response:
            try:
                if request.method == "POST":
                    raw = await request.json()
                    if not isinstance(raw, dict):
                        raise BadRequest("the body must be a JSON object")
                else:
                    raw = dict(request.query_params)
                return JSONResponse(api.search(base(request), request.method, raw), media_type="application/geo+json")
            except (BadRequest, ValueError) as exc:
                return JSONResponse({"code": "BadRequest", "description": str(exc)}, 400)

        async def data(request: Request) -> Response:
            root = api.data_root.resolve()
            target = (root / request.path_params["path"]).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return Response("not found", 404)
            return FileResponse(target)

        async def requests_log(request: Request) -> Response:
            return JSONResponse([list(entry) for entry in api.requests])

        class Recorder:
            """Records each request's method, path, query, Range header and status."""

            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http" or scope["path"] == "/_test/requests":
                    return await self.app(scope, receive, send)
                headers = dict(scope.get("headers") or [])
                entry = [scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                         headers.get(b"range", b"").decode() or None, 0]

                async def recording_send(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        entry[4] = message["status"]
                    await send(message)

                try:
                    await self.app(scope, receive, recording_send)
                finally:
                    api.requests.append(tuple(entry))

        routes = [
            Route("/", landing), Route("/conformance", conformance), Route("/collections", collections),
            Route("/collections/{collection}", collection), Route("/collections/{collection}/items/{item}", item),
            Route("/search", search, methods=["GET", "POST"]), Route("/data/{path:path}", data),
            Route("/no-search/", landing_without_search), Route("/_test/requests", requests_log),
        ]
        return Starlette(routes=routes, middleware=[Middleware(Recorder)])

    @contextmanager
    def serve(self, timeout: float = 60.0) -> Iterator[str]:
        """Serve on 127.0.0.1 at an ephemeral port; yield the base URL (no trailing slash); stop after.

        The server runs in a child process (``python -m testkit.stac_api``, this
        API pickled to its stdin), not in a thread of the test process: rasterio
        holds the GIL while GDAL opens a ``/vsicurl/`` dataset, so a server
        thread in the same process could not answer GDAL and the open would
        hang.  The child serves a copy of this API as it is now; closing its
        stdin stops it.  :func:`requests_seen` reads its request log.
        """
        import pickle
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        process = subprocess.Popen([sys.executable, "-m", "testkit.stac_api"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(pickle.dumps(self))
            process.stdin.flush()
            ready = threading.Event()
            answer: list[str] = []

            def read_url() -> None:
                answer.append(process.stdout.readline().decode().strip())  # type: ignore[union-attr]
                ready.set()

            threading.Thread(target=read_url, daemon=True).start()
            if not ready.wait(timeout) or not answer[0].startswith("http://"):
                raise RuntimeError(f"the test STAC API did not start (exit status {process.poll()})")
            yield answer[0]
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()


def requests_seen(url: str) -> list[tuple[str, str, str, str | None, int]]:
    """The requests the API at ``url`` has answered so far: (method, path, query, Range header, status)."""
    import httpx

    return [tuple(entry) for entry in httpx.get(f"{url}/_test/requests", timeout=10).json()]


def _serve_child() -> None:
    """The child process: read the pickled API from stdin, serve it, print the URL, stop at stdin's end."""
    import pickle
    import sys

    import uvicorn

    api = pickle.load(sys.stdin.buffer)
    config = uvicorn.Config(api.app(), host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    def watch() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        sys.stdin.buffer.read()  # until the parent closes it (or is gone)
        server.should_exit = True

    threading.Thread(target=watch, name="stac-api-watch", daemon=True).start()
    server.run()


def _instant(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _numbers(value: Any, what: str) -> list[float]:
    parts = value.split(",") if isinstance(value, str) else value
    try:
        return [float(v) for v in parts]
    except (TypeError, ValueError):
        raise BadRequest(f"{what}: expected numbers, got {value!r}") from None


def _parse(raw: dict[str, Any]) -> dict[str, Any]:
    """Search parameters as GET or POST send them, parsed; BadRequest when malformed."""
    params: dict[str, Any] = {"token": int(raw.get("token") or 0)}
    collections = raw.get("collections")
    if collections:
        params["collections"] = collections.split(",") if isinstance(collections, str) else list(collections)
    if raw.get("bbox") is not None:
        bbox = _numbers(raw["bbox"], "bbox")
        if len(bbox) != 4:
            raise BadRequest(f"bbox: expected 4 numbers, got {raw['bbox']!r}")
        params["bbox"] = bbox
    if raw.get("datetime"):
        parts = str(raw["datetime"]).split("/")
        if len(parts) == 1:
            params["datetime"] = (_instant(parts[0]), _instant(parts[0]))
        elif len(parts) == 2:
            params["datetime"] = tuple(None if p in ("", "..") else _instant(p) for p in parts)
        else:
            raise BadRequest(f"datetime: {raw['datetime']!r}")
    if raw.get("query"):
        query = json.loads(raw["query"]) if isinstance(raw["query"], str) else raw["query"]
        if not isinstance(query, dict) or not all(isinstance(c, dict) and set(c) <= set(_OPS) for c in query.values()):
            raise BadRequest(f"query: unsupported {raw['query']!r}")
        params["query"] = query
    if raw.get("limit") is not None:
        params["limit"] = int(raw["limit"])
        if params["limit"] < 1:
            raise BadRequest("limit must be at least 1")
    return params


def _spans(west: float, east: float) -> list[tuple[float, float]]:
    """Longitude spans of a bbox, split at the antimeridian when west > east."""
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def _intersects(a: list[float], b: list[float]) -> bool:
    if a[1] > b[3] or b[1] > a[3]:
        return False
    return any(w1 <= e2 and w2 <= e1 for w1, e1 in _spans(a[0], a[2]) for w2, e2 in _spans(b[0], b[2]))


def publish_item(api: StacApi, folder: str, band_files: dict[str, Path], *, item_id: str, collection: str,
                 when: str, cloud: float, offset: float | None = None) -> Path:
    """Write ``data_root/folder/item.json`` for ``band_files`` (which must lie in that folder) and serve the item.

    The item is :func:`testkit.products.write_stac_item`'s (relative hrefs,
    ``eo:bands``, ``raster:bands``) with the bands' footprint as geometry and
    bbox (lon/lat), ``datetime`` ``when``, ``eo:cloud_cover`` ``cloud`` and its
    collection; the file keeps relative hrefs, so it can be read by URL too.
    """
    import rasterio
    from rasterio.warp import transform_bounds

    from testkit.products import write_stac_item

    target = api.data_root / folder
    if any(Path(p).resolve().parent != target.resolve() for p in band_files.values()):
        raise ValueError(f"band files must lie in {target}")
    path = write_stac_item(target / "item.json", band_files, item_id=item_id, offset=offset)
    item = json.loads(path.read_text())
    with rasterio.open(next(iter(band_files.values()))) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    item["bbox"] = [west, south, east, north]
    item["geometry"] = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                             [west, south]]]}
    item["collection"] = collection
    item["properties"] = {**item["properties"], "datetime": when, "eo:cloud_cover": cloud}
    item["stac_extensions"] = [*item["stac_extensions"], "https://stac-extensions.github.io/eo/v1.1.0/schema.json"]
    item["stac_extensions"] = list(dict.fromkeys(item["stac_extensions"]))
    path.write_text(json.dumps(item, indent=2))
    api.add_item(folder, item)
    return path


def split_bands(raster: str | os.PathLike[str], folder: str | os.PathLike[str],
                prefix: str = "T30NVL_20240601T100000_") -> dict[str, Path]:
    """The bands of a 4-band (B02, B03, B04, B08) GeoTIFF, e.g. a mining scene, as one tiled GeoTIFF each."""
    import rasterio

    from minescan.synthetic.scene import BANDS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    with rasterio.open(raster) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype=src.dtypes[0], crs=src.crs,
                       transform=src.transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
        for index, band in enumerate(BANDS, start=1):
            files[band] = folder / f"{prefix}{band}_10m.tif"
            with rasterio.open(files[band], "w", **profile) as dst:
                dst.write(src.read(index), 1)
    return files


if __name__ == "__main__":
    _serve_child()
