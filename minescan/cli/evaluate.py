"""``minescan evaluate DETECTIONS TRUTH``: precision, recall and AP per class of any result file;
``minescan evaluate --robustness --model M SCENE TRUTH ...``: the model under standard perturbations.

Both files are read with :mod:`minescan.results.read` (``class_id`` and, for
the detections, ``score``; any CRS), compared in a common projected CRS, and
scored by :func:`minescan.results.evaluation.evaluate`: a table per class and the mAP.
The detections need not come from minescan; for the full precision-recall
curve behind AP, scan with a low ``--score-threshold`` (e.g. 0.05), since AP
only sees the detections in the file.

With ``--robustness`` the files are labelled scenes and their truth; the model
scans each under every perturbation of :mod:`minescan.robustness` and a
Markdown table of P/R/AP per class, mAP, the input shift and how many scenes
the domain-shift guard flagged is printed row by row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minescan.cli.options import bands
from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError



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


class EvaluateUsageError(MinescanError):
    """Arguments of ``evaluate`` that do not fit together."""


def run_robustness(args: argparse.Namespace) -> int:
    """Scan every (scene, truth) pair under each perturbation; print the table row by row; exit 0."""
    from minescan.robustness.report import choose, format_row, header, robustness
    from minescan.scan.scanner import Scanner

    if len(args.files) % 2:
        raise EvaluateUsageError(f"--robustness takes SCENE TRUTH pairs; got {len(args.files)} file(s)")
    if not args.model:
        raise EvaluateUsageError("--robustness needs --model MODEL.onnx")
    pairs = [(args.files[i], args.files[i + 1]) for i in range(0, len(args.files), 2)]
    chosen = choose(args.perturbations.split(",") if args.perturbations else None)
    scanner = Scanner(args.model)
    model_labels = scanner.detector.metadata.labels
    labels = [name for _, name in sorted(model_labels.items())] if model_labels else []
    options = {"score_threshold": args.scan_threshold}
    if args.bands:
        options["bands"] = args.bands
    if args.shift_threshold:
        options["shift_threshold"] = args.shift_threshold
    print(f"{Path(args.model).name} on {len(pairs)} scene(s), {len(chosen)} perturbation(s); IoU >= {args.iou:g}, "
          f"P/R at score >= {args.score_threshold:g}, AP over detections >= {args.scan_threshold:g}")
    printed = []

    def show(row) -> None:
        names = labels or [c.label for c in row.evaluation.classes]
        if not printed:
            print(header(names))
            printed.append(names)
        print(format_row(row, printed[0], len(pairs)), flush=True)

    robustness(scanner, pairs, perturbations=chosen, options=options, iou=args.iou, score_threshold=args.score_threshold,
               report=show)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Read, reproject, score and print; exit 0 (the figures are the answer, not a pass/fail)."""
    from minescan.results.evaluation import evaluate
    from minescan.results.read import common_crs, read_result_file

    if args.robustness:
        return run_robustness(args)
    if len(args.files) != 2:
        raise EvaluateUsageError(f"evaluate takes DETECTIONS TRUTH (2 files), got {len(args.files)}; "
                                 "--robustness takes SCENE TRUTH pairs")
    args.detections, args.truth = args.files
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
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="DETECTIONS TRUTH: a result file (class_id, score) and a truth file (class_id); "
                   "with --robustness: SCENE TRUTH [SCENE TRUTH ...]")
    r = p.add_argument_group("robustness: the model under standard perturbations of labelled scenes")
    r.add_argument("--robustness", action="store_true",
                   help="scan each SCENE under haze, brightness, contrast, gamma, per-band gain, noise, blur, "
                   "JPEG-like compression and band misregistration (two strengths each) and print P/R/AP per class")
    r.add_argument("--model", help="the ONNX model to score (with --robustness)")
    r.add_argument("--perturbations", metavar="NAMES", help="comma-separated subset, e.g. haze,darker,brighter (default: all)")
    r.add_argument("--bands", type=bands, help="1-based red,green,blue bands (default: as a scan picks them)")
    r.add_argument("--scan-threshold", type=_fraction(zero=True), default=0.05,
                   help="score threshold of the scans, so AP sees the whole curve (default 0.05)")
    r.add_argument("--shift-threshold", type=float, help=f"the guard's threshold (default {DEFAULTS.shift_threshold:g})")
    p.add_argument("--iou", type=_fraction(zero=False), default=DEFAULTS.match_iou,
                   help=f"IoU at which a detection matches an object (default {DEFAULTS.match_iou:g})")
    p.add_argument("--score-threshold", type=_fraction(zero=True), default=DEFAULTS.score_threshold,
                   help=f"detections counted for precision and recall (default {DEFAULTS.score_threshold:g}, the scan's default)")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_evaluate)
    return p
