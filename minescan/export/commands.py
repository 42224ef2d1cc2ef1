"""The ``minescan export`` command: SavedModel -> verified ONNX.

TensorFlow is imported only when the command runs, so the rest of the command
line works without the ``export`` extra.
"""

from __future__ import annotations

import argparse

from minescan.export.convert import DEFAULT_OPSET, DEFAULT_PREPROCESSING
from minescan.export.errors import ExportError


def _recipe(args: argparse.Namespace) -> dict:
    recipe = dict(DEFAULT_PREPROCESSING)
    if args.bands:
        recipe["bands"] = list(args.bands)
    if args.gain is not None:
        recipe["gain"] = args.gain
    if args.offset is not None:
        recipe["offset"] = args.offset
    return recipe


def run_export(args: argparse.Namespace) -> int:
    """Convert, then (with ``--verify``) compare TF and ONNX Runtime; exit 1 if they disagree."""
    from minescan.engine.labels import parse_labels
    from minescan.export.convert import export_onnx
    from minescan.export.verify import verify_export

    labels = parse_labels(args.labels) if args.labels else None
    report = export_onnx(args.saved_model, args.out, opset=args.opset, labels=labels, preprocessing=_recipe(args))
    print(report.format())
    if args.verify:
        parity = verify_export(args.saved_model, args.out)
        print(parity.format())
        if not parity.passed:
            raise ExportError(f"--verify: ONNX Runtime disagrees with TensorFlow beyond tolerance for {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction, scan_options: argparse.ArgumentParser) -> None:
    """Add ``export`` to the command line; ``scan_options`` is a parent parser holding --bands/--gain/--offset."""
    export = sub.add_parser(
        "export",
        parents=[scan_options],
        help="convert a TF Object Detection API SavedModel to ONNX (needs the 'export' extra)",
        description="Convert a SavedModel (serving_default) to ONNX in the model contract, "
        "with labels and the preprocessing recipe (--bands, --gain, --offset) in its metadata.",
    )
    export.add_argument("saved_model", help="SavedModel directory (exported_model/saved_model)")
    export.add_argument("--out", required=True, help="ONNX file to write")
    export.add_argument("--verify", action="store_true", help="run TF and ONNX Runtime on the same tiles and fail beyond tolerance")
    export.add_argument("--labels", help="class names (default: label_map.pbtxt next to or above the SavedModel)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}; tf2onnx refuses 19+)")
    export.set_defaults(handler=run_export)
