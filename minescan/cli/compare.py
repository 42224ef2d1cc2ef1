"""``minescan compare OLD NEW --out changes.gpkg``: what changed between two dates' results.

Sites of the two result files (any CRS; ``--also-old``/``--also-new`` add more files of a date, e.g. the
other tiles of a run) are matched by overlap and labelled new, gone, grown, shrunk, unchanged or unknown (a
site hidden by clouds, or outside the scenes, at one date) by :mod:`minescan.change`; the changes are written
to ``--out`` (GeoPackage layer ``changes`` or GeoJSON), one polygon per site, and counted on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minescan.errors import MinescanError


class CompareUsageError(MinescanError):
    """Arguments of ``compare`` that do not fit together."""


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def run_compare(args: argparse.Namespace) -> int:
    """Read both dates, match, write ``--out``; print the counts per label and the path; exit 0."""
    from minescan.change.compare import OUTPUT_SUFFIXES, compare_results
    from minescan.change.rule import ChangeRule
    from minescan.results.writers import check_file_writable

    if Path(args.out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise CompareUsageError(f"{args.out}: --out must end in .gpkg or .geojson")
    check_file_writable(args.out)
    given = {name: getattr(args, name) for name in ("min_iou", "min_cover", "growth", "max_unobserved")
             if getattr(args, name) is not None}
    rule = ChangeRule(**given)
    changes = compare_results([args.old, *args.also_old], [args.new, *args.also_new], rule)
    path = changes.write(args.out)
    for label, n in changes.counts().items():
        print(f"{label:<10} {n}")
    alerts = len(changes.alerts())
    if alerts:
        print(f"{alerts} new site{'' if alerts == 1 else 's'} outside every concession (listed first)")
    print(f"{len(changes)} site{'' if len(changes) == 1 else 's'} -> {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``compare`` to the command line."""
    from minescan.change.rule import ChangeRule  # pure Python: help texts read the defaults

    rule = ChangeRule()
    p = sub.add_parser(
        "compare",
        help="what changed between two dates' results: new, gone, grown, shrunk, unchanged or unknown sites",
        description="Match the sites of two result files (GeoPackage, GeoJSON, any CRS) by overlap and label each "
        "new, gone, grown, shrunk or unchanged; a site under clouds or outside the scenes at one date is unknown, "
        "not gone.  Writes one polygon per site (the box around it at both dates) to --out.",
    )
    p.add_argument("old", metavar="OLD", help="the earlier result file (the baseline)")
    p.add_argument("new", metavar="NEW", help="the later result file")
    p.add_argument("--out", required=True, metavar="FILE", help="the changes: FILE.gpkg (layer 'changes') or FILE.geojson")
    p.add_argument("--also-old", action="append", default=[], metavar="FILE",
                   help="another result file of the earlier date (e.g. another tile); repeatable")
    p.add_argument("--also-new", action="append", default=[], metavar="FILE",
                   help="another result file of the later date; repeatable")
    r = p.add_argument_group("the matching rule")
    r.add_argument("--min-iou", type=_number, metavar="F",
                   help=f"an old and a new site are one site when their intersection is at least F of their union "
                   f"(default {rule.min_iou:g}) ...")
    r.add_argument("--min-cover", type=_number, metavar="F",
                   help=f"... or at least F of the smaller one's area (default {rule.min_cover:g})")
    r.add_argument("--growth", type=_number, metavar="F",
                   help=f"grown when the area grew by at least F (x {1 + rule.growth:g}), shrunk when it fell as much "
                   f"(/ {1 + rule.growth:g}) (default {rule.growth:g})")
    r.add_argument("--max-unobserved", type=_number, metavar="F",
                   help=f"a site more than F unobserved at a date (clouds, no data, outside the scenes) is unknown "
                   f"(default {rule.max_unobserved:g})")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_compare)
    return p
