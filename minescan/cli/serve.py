"""``minescan serve``: the models behind the Open Inference Protocol (KServe v2) and scene jobs (the ``serve`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError


class ServeUsageError(MinescanError):
    """Arguments of ``serve`` that cannot be used."""


def _model(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (a name without '/'), got {value!r}")
    return name, path


def run_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ServeUsageError(f"minescan serve needs the 'serve' extra ({exc.name} is missing): pip install 'minescan[serve]'") from None
    from minescan.serve.app import ServeSettings, serve

    models = dict(args.model)
    if len(models) != len(args.model):
        raise ServeUsageError("each --model NAME must be different")
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ServeUsageError(f"--token-file {args.token_file}: {exc.strerror}") from None
        if len(token) < 16:
            raise ServeUsageError(f"--token-file {args.token_file}: the token must have at least 16 characters")
    data_root = Path(args.data_root) if args.data_root else None
    if data_root is not None and not data_root.is_dir():
        raise ServeUsageError(f"--data-root {args.data_root}: not a folder")
    if args.max_batch < 1 or args.batch_delay_ms < 0 or args.max_body_mb <= 0 or args.max_queued_jobs < 1:
        raise ServeUsageError("--max-batch and --max-queued-jobs must be at least 1, --batch-delay-ms 0 or more, "
                              "--max-body-mb positive")
    options = {k: v for k, v in (("backend", args.backend), ("threads", args.threads), ("workers", args.workers)) if v is not None}
    gates = dict(args.gate)
    settings = ServeSettings(models=models, gates=gates, state=Path(args.state), data_root=data_root, token=token,
                             max_batch=args.max_batch, batch_delay_ms=args.batch_delay_ms, options=options,
                             max_body=int(args.max_body_mb * 2**20), max_jobs_queued=args.max_queued_jobs)
    serve(settings, host=args.host, port=args.port)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from minescan.engine.backends import BACKENDS

    p = sub.add_parser("serve", help="serve models over the Open Inference Protocol (KServe v2) and run scene jobs",
                       description="An HTTP service: /v2 (KServe v2 / Triton HTTP, JSON and binary tensors, dynamic "
                       "batching), /v1/scans (whole-scene jobs kept in --state), /metrics (Prometheus). "
                       "Needs the 'serve' extra.")
    p.add_argument("--model", action="append", type=_model, required=True, metavar="NAME=PATH",
                   help="a model to serve (.onnx), repeatable")
    p.add_argument("--gate", action="append", type=_model, default=[], metavar="NAME=CLASSIFIER",
                   help="screen the scene jobs of model NAME with a tile classifier gate (.onnx; jobs take the option "
                   f"gate_threshold, default {DEFAULTS.gate_threshold:g}); repeatable")
    p.add_argument("--host", default=DEFAULTS.serve_host, help=f"address to bind (default {DEFAULTS.serve_host}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULTS.serve_port, help=f"port (default {DEFAULTS.serve_port})")
    p.add_argument("--data-root", help="folder scene jobs may read from (paths in requests are relative to it); "
                   "without it the server runs no scene jobs")
    p.add_argument("--state", default="minescan-serve", help="folder for the job database and results (default minescan-serve)")
    p.add_argument("--token-file", help="file holding a bearer token every endpoint but the health checks requires")
    p.add_argument("--max-batch", type=int, default=DEFAULTS.serve_max_batch,
                   help=f"tiles per model call when batching requests (default {DEFAULTS.serve_max_batch}; 1 = no batching)")
    p.add_argument("--batch-delay-ms", type=float, default=DEFAULTS.serve_batch_delay_ms,
                   help=f"how long a batch waits for more requests (default {DEFAULTS.serve_batch_delay_ms:g})")
    p.add_argument("--max-body-mb", type=float, default=DEFAULTS.serve_max_body / 2**20,
                   help=f"largest request body in MiB (default {DEFAULTS.serve_max_body / 2**20:g})")
    p.add_argument("--max-queued-jobs", type=int, default=DEFAULTS.serve_max_jobs_queued,
                   help=f"scene jobs waiting before new ones are answered 429 (default {DEFAULTS.serve_max_jobs_queued})")
    p.add_argument("--backend", choices=BACKENDS, help="where the models run (default auto)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model call")
    p.add_argument("--workers", type=int, help="model calls running side by side")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_serve)
    return p
