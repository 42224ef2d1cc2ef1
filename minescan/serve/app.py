"""``minescan serve``: the Open Inference Protocol (KServe v2) and scene jobs, on Starlette and uvicorn.

Framework: Starlette (the ASGI toolkit FastAPI is built on) served by uvicorn.
FastAPI's request models and OpenAPI pages add nothing here: the protocol's
bodies are parsed by :mod:`minescan.serve.protocol` (JSON plus raw binary
tensors, which FastAPI would not validate anyway), so the plain toolkit keeps
the dependency set and the per-request overhead small.

Endpoints (every one but the health checks needs ``Authorization: Bearer
TOKEN`` when the server has a token):

- ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata);
- ``GET /v2/models/{name}[/versions/1]``, ``.../ready``, ``POST .../infer`` (JSON
  and binary tensors; dynamically batched, :mod:`minescan.serve.batcher`);
- ``POST /v1/scans``, ``GET /v1/scans/{id}``, ``GET /v1/scans/{id}/detections?format=geojson|gpkg``,
  ``DELETE /v1/scans/{id}`` (:mod:`minescan.serve.jobs`);
- ``GET /metrics`` (Prometheus, :mod:`minescan.serve.metrics`).

Errors are ``{"error": "one line"}`` with a 4xx status (5xx only for the
server's own faults, whose details stay in its log; no traceback reaches a
client).  One JSON log line per request goes to the ``minescan.serve`` logger.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from minescan import __version__
from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.serve.batcher import Busy, DynamicBatcher
from minescan.serve.jobs import DONE, JobError, JobRunner, JobStore, QueueFull
from minescan.serve.metrics import Metrics
from minescan.serve.paths import confined, inline_stac_item
from minescan.serve.protocol import HEADER_LENGTH, Limits, ProtocolError, encode_infer, model_metadata, parse_infer

log = logging.getLogger("minescan.serve")


PATH_OPTIONS = ("mask", "concessions")  # scan options naming files on the server: under the data root only


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``minescan serve`` is told; defaults from :mod:`minescan.defaults`."""

    models: Mapping[str, str]
    state: Path
    data_root: Path | None = None
    token: str | None = None
    max_batch: int = DEFAULTS.serve_max_batch
    batch_delay_ms: float = DEFAULTS.serve_batch_delay_ms
    max_body: int = DEFAULTS.serve_max_body
    max_tiles: int = DEFAULTS.serve_max_tiles
    max_side: int = DEFAULTS.serve_max_side
    max_jobs_queued: int = DEFAULTS.serve_max_jobs_queued
    max_infer_pending: int = DEFAULTS.serve_max_infer_pending
    job_workers: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)  # Scanner defaults (threads, workers, backend)
    gates: Mapping[str, str] = field(default_factory=dict)  # model name -> its classifier gate (minescan.scan.gate)


class ServeError(MinescanError):
    """Settings the service cannot start with."""


class Service:
    """The loaded models, their batchers, the job runner and the metrics; shared by every request."""

    def __init__(self, settings: ServeSettings) -> None:
        from minescan.scan.scanner import Scanner

        self.settings = settings
        self.limits = Limits(settings.max_body, settings.max_tiles, settings.max_side)
        self.scanners: dict[str, Any] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self.ready = False
        unknown = sorted(set(settings.gates) - set(settings.models))
        if unknown:
            raise ServeError(f"gate for {unknown[0]!r}, but no model has that name; models: {', '.join(settings.models)}")
        for name, path in settings.models.items():
            scanner = Scanner(path, gate=settings.gates.get(name), **settings.options)  # a gate screens its scene jobs
            if getattr(scanner.detector, "task", "detector") != "detector":
                raise ServeError(f"model {name!r} ({path}) is a tile classifier; minescan serve serves detectors")
            if not hasattr(scanner.detector, "run_contract"):
                raise ServeError(f"model {name!r} ({path}): the {scanner.backend} backend cannot answer infer requests; serve an .onnx model")
            self.scanners[name] = scanner
        self.metrics = Metrics(lambda: self.store.counts(), lambda: sum(b.depth for b in self.batchers.values()))
        for name, scanner in self.scanners.items():
            detector = scanner.detector
            self.batchers[name] = DynamicBatcher(
                detector.run_contract, max_batch=settings.max_batch, delay=settings.batch_delay_ms / 1000,
                workers=detector.concurrency, max_pending=settings.max_infer_pending, observe=self._observe_batch)
        self.store = JobStore(settings.state / "jobs.sqlite")
        self.runner = JobRunner(self.store, self._scan_job, settings.state / "results", workers=settings.job_workers,
                                on_tiles=lambda n: self.metrics.tiles.labels("scan").inc(n))

    def _observe_batch(self, tiles: int) -> None:
        self.metrics.batch.observe(tiles)
        self.metrics.tiles.labels("infer").inc(tiles)

    def _scan_job(self, job: Any, *, progress: Callable, cancel: threading.Event) -> Any:
        return self.scanners[job.model].scan(job.source, progress=progress, cancel=cancel, **job.options)

    def start(self) -> None:
        again, failed = self.store.recover()
        if again or failed:
            log.info(json.dumps({"event": "recovered", "requeued": again, "failed": failed}))
        self.runner.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.runner.stop()
        for batcher in self.batchers.values():
            batcher.close()
        self.store.close()


def _error(message: str, status: int, headers: Mapping[str, str] | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


async def _body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes whatever Content-Length claims."""
    from starlette.requests import ClientDisconnect

    claimed = request.headers.get("content-length")
    if claimed is not None:
        if not claimed.isdigit():
            raise ProtocolError("Content-Length must be a whole number")
        if int(claimed) > limit:
            raise ProtocolError(f"request body of {claimed} bytes, over the {limit} byte limit", 413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body over the {limit} byte limit", 413)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ProtocolError("the request body ended early (client disconnected)") from None
    if claimed is not None and size != int(claimed):
        raise ProtocolError(f"the request body has {size} bytes, Content-Length says {claimed}")
    return b"".join(chunks)


def create_app(service: Service):
    """The ASGI application over ``service``."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    settings = service.settings
    token = settings.token

    def endpoint(label: str, handler: Callable[[Any], Awaitable[Any]], *, public: bool = False):
        async def run(request: Any) -> Any:
            started = time.perf_counter()
            status = 500
            try:
                if token is not None and not public:
                    given = request.headers.get("authorization", "")
                    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                        response = _error("missing or wrong bearer token", 401, {"www-authenticate": "Bearer"})
                        status = 401
                        return response
                response = await handler(request)
                status = response.status_code
                return response
            except ProtocolError as exc:
                status = exc.status
                return _error(str(exc), exc.status)
            except Busy as exc:
                status = 503
                return _error(str(exc), 503, {"retry-after": "1"})
            except QueueFull as exc:
                status = 429
                return _error(str(exc), 429, {"retry-after": "30"})
            except JobError as exc:
                status = 404
                return _error(str(exc), 404)
            except MinescanError as exc:  # the scan's own one-line faults (a bad option, an unreadable scene)
                status = 400
                return _error(str(exc).splitlines()[0][:500], 400)
            except Exception as exc:  # the server's fault: logged here, never shown to the client
                log.exception("internal error on %s", request.url.path)
                return _error(f"internal error ({type(exc).__name__})", 500)
            finally:
                seconds = time.perf_counter() - started
                service.metrics.observe(label, status, seconds)
                log.info(json.dumps({"ts": round(time.time(), 3), "method": request.method, "path": request.url.path,
                                     "endpoint": label, "status": status, "ms": round(seconds * 1000, 2),
                                     "client": request.client.host if request.client else None}))

        return run

    def scanner_of(request: Any) -> tuple[str, Any]:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in service.scanners or version not in (None, "1"):
            raise ProtocolError(f"unknown model {name[:60]!r}" + (f" version {version[:10]!r}" if version else "")
                                + f"; this server has {', '.join(service.scanners)}", 404)
        return name, service.scanners[name]

    async def live(request: Any) -> Any:
        return JSONResponse({"live": True})

    async def ready(request: Any) -> Any:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    async def server_metadata(request: Any) -> Any:
        return JSONResponse({"name": "minescan", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def metadata(request: Any) -> Any:
        name, scanner = scanner_of(request)
        return JSONResponse(model_metadata(name, scanner.detector.signature, scanner.detector.output_types))

    async def model_ready(request: Any) -> Any:
        scanner_of(request)
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    async def infer(request: Any) -> Any:
        name, scanner = scanner_of(request)
        body = await _body(request, settings.max_body)
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), service.limits)
        signature = scanner.detector.signature
        h, w = parsed.tiles.shape[1:3]
        if (signature.height or h, signature.width or w) != (h, w):
            raise ProtocolError(f"tiles are {h}x{w} px; model {name!r} takes {signature.height}x{signature.width}")
        outputs = await asyncio.wrap_future(service.batchers[name].submit(parsed.tiles))
        content, headers = encode_infer(name, parsed, outputs)
        return Response(content, headers=headers)

    async def submit(request: Any) -> Any:
        from minescan.errors import SettingError
        from minescan.quality.settings import MASK_CHOICES
        from minescan.scan.plan import OPTION_NAMES, ScanOptions

        body = await _body(request, min(settings.max_body, 1 << 20))
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ProtocolError("the request is not valid JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError("the request must be a JSON object")
        model = data.get("model", next(iter(service.scanners)) if len(service.scanners) == 1 else None)
        if model not in service.scanners:
            raise ProtocolError(f"unknown model {str(model)[:60]!r}; this server has {', '.join(service.scanners)}", 404)
        if settings.data_root is None:
            raise ProtocolError("this server scans no scenes: it was started without --data-root", 403)
        options = data.get("options", {})
        if not isinstance(options, dict):
            raise ProtocolError("'options' must be a JSON object")
        allowed = set(OPTION_NAMES) - {"labels", "read_threads"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ProtocolError(f"unknown option {unknown[0][:40]!r}; known: {', '.join(sorted(allowed))}")
        if "gate_threshold" in options and service.scanners[model].gate is None:
            raise ProtocolError(f"option gate_threshold: model {model!r} has no gate (minescan serve --gate {model}=CLASSIFIER)")
        for key in PATH_OPTIONS:  # files the scan reads: confined to the data root like the scene
            value = options.get(key)
            if value is not None and not (key == "mask" and value in MASK_CHOICES):
                options[key] = str(confined(settings.data_root, value, what=f"options.{key}"))
        try:
            ScanOptions(**options)
        except SettingError as exc:  # OptionError and the mask classes' check
            raise ProtocolError(f"option {exc}") from None
        except TypeError:
            raise ProtocolError("options have values of the wrong type") from None
        if ("scene" in data) == ("stac_item" in data):
            raise ProtocolError("give exactly one of 'scene' (a path under the data root) or 'stac_item' (an inline item)")
        if "scene" in data:
            source, scene = str(confined(settings.data_root, data["scene"])), data["scene"]
        else:
            name = f"item-{time.time_ns()}"
            source = str(inline_stac_item(settings.data_root, data["stac_item"], settings.state / "items", name))
            scene = f"stac_item {str(data['stac_item'].get('id', name))[:80]}"
        job = service.store.add(model, scene, source, options, settings.max_jobs_queued)
        service.runner.notify()
        return JSONResponse({"id": job.id, "state": job.state, "status_url": f"/v1/scans/{job.id}"}, status_code=202)

    async def status(request: Any) -> Any:
        return JSONResponse(service.store.get(request.path_params["id"]).to_json())

    async def detections(request: Any) -> Any:
        job = service.store.get(request.path_params["id"])
        kind = request.query_params.get("format", "geojson")
        suffixes = {"geojson": (".geojson", "application/geo+json"), "gpkg": (".gpkg", "application/geopackage+sqlite3")}
        if kind not in suffixes:
            raise ProtocolError(f"format {kind[:20]!r}: give geojson or gpkg")
        if job.state != DONE:
            raise ProtocolError(f"job {job.id} is {job.state}; detections exist once it is done", 409)
        suffix, media = suffixes[kind]
        return FileResponse(service.runner.result_path(job.id, suffix), media_type=media,
                            filename=f"{job.id}{suffix}")

    async def cancel(request: Any) -> Any:
        return JSONResponse(service.runner.cancel(request.path_params["id"]).to_json())

    async def metrics(request: Any) -> Any:
        content, media = service.metrics.render()
        return Response(content, media_type=media)

    @asynccontextmanager
    async def lifespan(app: Any):
        service.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    routes = [
        Route("/v2/health/live", endpoint("live", live, public=True)),
        Route("/v2/health/ready", endpoint("ready", ready, public=True)),
        Route("/v2", endpoint("server_metadata", server_metadata)),
        Route("/metrics", endpoint("metrics", metrics)),
        Route("/v1/scans", endpoint("scan_submit", submit), methods=["POST"]),
        Route("/v1/scans/{id}", endpoint("scan_status", status), methods=["GET"]),
        Route("/v1/scans/{id}", endpoint("scan_cancel", cancel), methods=["DELETE"]),
        Route("/v1/scans/{id}/detections", endpoint("scan_detections", detections)),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, endpoint("model_metadata", metadata)),
            Route(prefix + "/ready", endpoint("model_ready", model_ready)),
            Route(prefix + "/infer", endpoint("infer", infer), methods=["POST"]),
        ]

    async def not_found(request: Any, exc: Exception) -> Any:
        status = getattr(exc, "status_code", 404)
        service.metrics.observe("other", status, 0.0)
        return _error(f"no endpoint {request.method} {request.url.path[:100]}" if status == 404 else "method not allowed", status)

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})


def serve(settings: ServeSettings, host: str = DEFAULTS.serve_host, port: int = DEFAULTS.serve_port) -> None:
    """Load the models, then serve until SIGINT/SIGTERM (graceful: running jobs are queued again)."""
    import uvicorn

    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    service = Service(settings)
    app = create_app(service)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    log.info(json.dumps({"event": "listening", "url": f"http://{host}:{port}", "models": list(service.scanners),
                         "data_root": str(settings.data_root) if settings.data_root else None,
                         "auth": settings.token is not None}))
    server.run()
