"""``minescan evaluate DETECTIONS TRUTH``: precision, recall and AP per class of any result file.

Both files are read with :mod:`minescan.results.read` (``class_id`` and, for
the detections, ``score``; any CRS), compared in a common projected CRS, and
scored by :func:`minescan.results.evaluation.evaluate`: a table per class and the mAP.
The detections need not come from minescan; for the full precision-recall
curve behind AP, scan with a low ``--score-threshold`` (e.g. 0.05), since AP
only sees the detections in the file.
"""

from __future__ import annotations

import argparse

from minescan.defaults import DEFAULTS



def _fraction(*, zero: bool):
    """An argparse type for numbers in [0, 1] (``zero``) or (0, 1]."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (0 <= number <= 1 if zero else 0 < number <= 1):
            raise argparse.ArgumentTypeError(f"expected a number in {'[0' if zero else '(0'}, 1], got {value!r}")
        return number

    return parse


def run_evaluate(args: argparse.Namespace) -> int:
    """Read, reproject, score and print; exit 0 (the figures are the answer, not a pass/fail)."""
    from minescan.results.evaluation import evaluate
    from minescan.results.read import common_crs, read_result_file

    detections = read_result_file(args.detections, scores=True)
    truth = read_result_file(args.truth, scores=False)
    crs = common_crs(detections, truth)
    result = evaluate(
        detections.boxes(crs), detections.scores, detections.class_ids, truth.boxes(crs), truth.class_ids,
        iou=args.iou, score_threshold=args.score_threshold, labels={**detections.labels, **truth.labels},
    )
    name = crs.to_string() if crs.to_epsg() is None else f"EPSG:{crs.to_epsg()}"
    print(
        f"{args.detections} ({len(detections.class_ids)} detections) against {args.truth} ({len(truth.class_ids)} objects) "
        f"in {name}; IoU >= {args.iou:g}, precision and recall at score >= {args.score_threshold:g}"
    )
    print(result.format())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the command line."""
    p = sub.add_parser(
        "evaluate",
        help="precision, recall and mAP@0.5 per class of a result file against a truth file",
        description="Compare detections with truth (GeoJSON, GeoPackage, any CRS; features with class_id, "
        "and score for detections): per class precision and recall at --score-threshold, "
        "all-point interpolated AP over all detections, and mAP.",
    )
    p.add_argument("detections", help="result file (.geojson/.gpkg) with class_id and score")
    p.add_argument("truth", help="truth file (.geojson/.gpkg) with class_id")
    p.add_argument("--iou", type=_fraction(zero=False), default=DEFAULTS.match_iou,
                   help=f"IoU at which a detection matches an object (default {DEFAULTS.match_iou:g})")
    p.add_argument("--score-threshold", type=_fraction(zero=True), default=DEFAULTS.score_threshold,
                   help=f"detections counted for precision and recall (default {DEFAULTS.score_threshold:g}, the scan's default)")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_evaluate)
    return p
