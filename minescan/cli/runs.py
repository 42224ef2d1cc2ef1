"""Command-line options of multi-scene runs, added to ``minescan scan``."""

from __future__ import annotations

import argparse

RESULT_FORMATS = ("gpkg", "geojson")
DEFAULT_QUICKLOOK_SIZE = 1024  # px; a 10980 px Sentinel-2 tile becomes a PNG of 1-3 MB


def _size(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no quicklooks) or a size in px, got {value}")
    return number


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--out-dir``, ``--manifest``, ``--boa-offset``, ``--format``, ``--quicklook-size`` to the scan parser."""
    g = parser.add_argument_group("many scenes (resumable runs into a folder)")
    g.add_argument("--out-dir", help="run folder: one result and quicklook per scene, journal, run summary; "
                   "rerunning the same command resumes (needed for several scenes or --manifest)")
    g.add_argument("--manifest", action="append", default=[], metavar="FILE",
                   help="text file listing inputs, one per line (# comments; paths relative to the file); repeatable")
    g.add_argument("--boa-offset", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the offset that .SAFE products (baseline >= 04.00) and STAC items declare "
                   "(default; an explicit --offset wins)")
    g.add_argument("--format", choices=RESULT_FORMATS, default="gpkg", help="result file format per scene (default gpkg)")
    g.add_argument("--quicklook-size", type=_size, default=DEFAULT_QUICKLOOK_SIZE, metavar="PX",
                   help=f"longest side of each scene's quicklook PNG; 0 for none (default {DEFAULT_QUICKLOOK_SIZE})")
