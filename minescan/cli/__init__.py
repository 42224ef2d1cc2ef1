"""The ``minescan`` command line: the only part of minescan that knows argparse.

Faults in user input (:class:`~minescan.errors.MinescanError`) print one line
on stderr and exit 1; ``--verbose`` adds the traceback.  Ctrl-C exits 130;
result files are written atomically, so nothing half-written is left.
Start-up imports only argparse and the parsers; each command imports what it
needs (GDAL, ONNX Runtime, TensorFlow) when it runs, so ``minescan --help``
stays fast (measured in the README).
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import Sequence

from minescan import __version__
from minescan.cli import bench, build, calibrate, compare, demo, evaluate, export, export_triton, scan, serve
from minescan.cli.options import flag
from minescan.errors import MinescanError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minescan", description="Scan Sentinel-2 scenes for mining sites.")
    parser.add_argument("--version", action="version", version=f"minescan {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks with errors")
    sub = parser.add_subparsers(dest="command", required=True)
    scan.add_parser(sub)
    demo.add_parser(sub)
    bench.add_parser(sub)
    export.add_parsers(sub)
    build.add_build_parser(sub)
    evaluate.add_parser(sub)
    compare.add_parser(sub)
    calibrate.add_parser(sub)
    serve.add_parser(sub)
    export_triton.add_parser(sub)
    return parser


def _message(exc: MinescanError) -> str:
    """The one line for ``exc``; a setting out of range is named by its flag."""
    from minescan.errors import SettingError

    return exc.describe(flag(exc.setting)) if isinstance(exc, SettingError) else str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    # minescan checks georeferencing itself and says what is missing in its one line; rasterio's two-line
    # NotGeoreferencedWarning before it would break the one-line contract on stderr.
    warnings.filterwarnings("ignore", message="Dataset has no geotransform", module="rasterio")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except MinescanError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"minescan: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("minescan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
