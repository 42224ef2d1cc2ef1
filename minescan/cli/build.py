"""The ``minescan build`` command: contract ONNX -> TensorRT engine + sidecar.

TensorRT and cuda-python are imported only when the command runs; without
them it stops with one line saying what is missing.
"""

from __future__ import annotations

import argparse

from minescan.engine.backends import ENGINE_SUFFIXES
from minescan.export.build_profile import DEFAULT_BATCH, DEFAULT_WORKSPACE_GB, check_engine_path, parse_batch


def _size(value: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in px like 640x640, got {value!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {value!r}")
    return height, width


def run_build(args: argparse.Namespace) -> int:
    """Build the engine and print the report."""
    check_engine_path(args.out)  # before TensorRT loads: an engine named otherwise would pass for an ONNX model
    from minescan.export.build import build_engine

    report = build_engine(
        args.onnx, args.out, batch=parse_batch(args.batch), workspace_gb=args.workspace, timing_cache=args.timing_cache, size=args.size
    )
    print(report.format())
    return 0


def add_build_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``build`` to the command line."""
    build = sub.add_parser(
        "build",
        help="compile an ONNX model into a TensorRT engine for this GPU (needs the 'gpu' extra)",
        description="Build a TensorRT engine from an ONNX model in the detector contract, with an optimization "
        "profile for the batch and a sidecar <engine>.json (TensorRT version, GPU, hashes, profile, labels). "
        "Engines run only with the TensorRT version and GPU model that built them.",
    )
    build.add_argument("onnx", help="ONNX model (from minescan export, or its FP16/INT8 rewrite)")
    build.add_argument("--out", required=True, help=f"engine file to write ({', '.join(ENGINE_SUFFIXES)}); the sidecar goes to OUT.json")
    build.add_argument("--batch", default=":".join(map(str, DEFAULT_BATCH)), metavar="MIN:OPT:MAX",
                       help="batch range of the profile, tuned for OPT (default %(default)s); a graph with a fixed batch keeps it")
    build.add_argument("--size", type=_size, metavar="HxW", help="tile size when the graph and its metadata leave it open")
    build.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache: rebuilds on the same GPU go faster")
    build.add_argument("--workspace", type=float, default=DEFAULT_WORKSPACE_GB, metavar="GB",
                       help=f"TensorRT workspace memory limit (default {DEFAULT_WORKSPACE_GB:g} GB)")
    build.set_defaults(handler=run_build)
