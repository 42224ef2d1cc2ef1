"""``minescan evaluate DETECTIONS TRUTH``: precision, recall and AP per class of any result file;
``minescan evaluate HEATMAP.tif TRUTH``: a classifier's heatmap, per cell;
``minescan evaluate --robustness --model M SCENE TRUTH ...``: the model under standard perturbations.

Both files are read with :mod:`minescan.results.read` (``class_id`` and, for
the detections, ``score``; any CRS), compared in a common projected CRS, and
scored by :func:`minescan.results.evaluation.evaluate`: a table per class and the mAP.
The detections need not come from minescan; for the full precision-recall
curve behind AP, scan with a low ``--score-threshold`` (e.g. 0.05), since AP
only sees the detections in the file.

A first file ending in ``.tif``/``.tiff`` is a heatmap (``minescan scan`` with
a tile classifier): one band (``--label``, default the last) is scored per
cell against the truth by :mod:`minescan.results.heatmap_evaluation`:
precision, recall and F1 at ``--threshold``, ROC AUC, and how many cells were
positive, negative, ambiguous or nodata.  Every truth class counts as the
positive class unless ``--truth-classes`` names some (objects of the other
classes are then not truth at all).

With ``--robustness`` the files are labelled scenes and their truth; the model
scans each under every perturbation of :mod:`minescan.robustness` and a
Markdown table of P/R/AP per class, mAP, the input shift and how many scenes
the domain-shift guard flagged is printed row by row (detectors only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minescan.cli.options import bands, int_list
from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError

HEATMAP_SUFFIXES = (".tif", ".tiff")  # as scan writes them (minescan.cli.scan)
HEATMAP_OPTIONS = ("threshold", "label", "truth_classes")  # None unless given: they score heatmaps only
DETECTION_OPTIONS = ("iou", "score_threshold")  # None unless given: they score detections only


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> str:
    """The flags among ``names`` the user gave, as typed ("" when none)."""
    return ", ".join(f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None)


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
    if scanner.model.task != "detector":
        raise EvaluateUsageError(f"--robustness scores detectors; {args.model} is a tile {scanner.model.task}: "
                                 "scan each scene into a heatmap and run evaluate HEATMAP.tif TRUTH")
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

    given = _given(args, HEATMAP_OPTIONS)
    if args.robustness and given:
        raise EvaluateUsageError(f"{given} score(s) a heatmap (HEATMAP.tif TRUTH); --robustness scores detectors")
    if not args.robustness and Path(args.files[0]).suffix.lower() in HEATMAP_SUFFIXES and len(args.files) == 2:
        detection = _given(args, DETECTION_OPTIONS)
        if detection:
            raise EvaluateUsageError(f"{detection} score(s) detections; {args.files[0]} is a heatmap "
                                     "(for heatmaps: --threshold, --label, --truth-classes)")
        return run_heatmap_evaluate(args)
    args.iou = DEFAULTS.match_iou if args.iou is None else args.iou
    args.score_threshold = DEFAULTS.score_threshold if args.score_threshold is None else args.score_threshold
    if args.robustness:
        return run_robustness(args)
    if len(args.files) != 2:
        raise EvaluateUsageError(f"evaluate takes DETECTIONS TRUTH or HEATMAP.tif TRUTH (2 files), got {len(args.files)}; "
                                 "--robustness takes SCENE TRUTH pairs")
    if given:
        raise EvaluateUsageError(f"{given} score(s) a heatmap (HEATMAP.tif); {args.files[0]} is a result file "
                                 "(for detections: --score-threshold, --iou)")
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


def run_heatmap_evaluate(args: argparse.Namespace) -> int:
    """Score one band of a heatmap per cell against the truth and print it; exit 0."""
    from minescan.results.heatmap_evaluation import evaluate_heatmap, read_heatmap, select_classes
    from minescan.results.read import read_result_file

    heatmap_path, truth_path = args.files
    threshold = 0.5 if args.threshold is None else args.threshold
    heat = read_heatmap(heatmap_path, args.label)
    truth = read_result_file(truth_path, scores=False)
    keep = select_classes(truth.class_ids, args.truth_classes)
    classes = sorted({int(c) for c in truth.class_ids[keep]} | set(args.truth_classes or ()))
    report = evaluate_heatmap(heat.probability, heat.transform, truth.boxes(heat.crs)[keep], threshold=threshold,
                              label=heat.label, window_cells=heat.window_cells)
    crs = heat.crs.to_string() if heat.crs.to_epsg() is None else f"EPSG:{heat.crs.to_epsg()}"
    unit = heat.crs.axis_info[0].unit_name if heat.crs.axis_info else "map units"
    unit = {"metre": "m", "degree": "deg"}.get(unit, unit)
    objects = f"{int(keep.sum())} object{'' if keep.sum() == 1 else 's'}"
    named = ", ".join(f"{c} {truth.labels[c]}" if c in truth.labels else str(c) for c in classes)
    named = f"class{'' if len(classes) == 1 else 'es'} {named}" if classes else "no class"
    rows, cols = heat.probability.shape
    print(f"{heatmap_path} (band {heat.band} of {len(heat.labels)}, {heat.label!r}; {cols} x {rows} cells of "
          f"{heat.cell_size:g} {unit}) against {truth_path} ({objects} of {named} as positive) in {crs}")
    print(report.format())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the command line."""
    p = sub.add_parser(
        "evaluate",
        help="precision, recall and mAP@0.5 per class of a result file (or per cell of a heatmap) against a truth file",
        description="Compare detections with truth (GeoJSON, GeoPackage, any CRS; features with class_id, "
        "and score for detections): per class precision and recall at --score-threshold, "
        "all-point interpolated AP over all detections, and mAP.  A heatmap (.tif, from a tile classifier) "
        "is scored per cell: precision, recall and F1 at --threshold and ROC AUC.",
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="DETECTIONS TRUTH: a result file (class_id, score) and a truth file (class_id); "
                   "HEATMAP.tif TRUTH: a classifier's heatmap and a truth file; "
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
    p.add_argument("--iou", type=_fraction(zero=False),
                   help=f"IoU at which a detection matches an object (default {DEFAULTS.match_iou:g})")
    p.add_argument("--score-threshold", type=_fraction(zero=True),
                   help=f"detections counted for precision and recall (default {DEFAULTS.score_threshold:g}, the scan's default)")
    h = p.add_argument_group("heatmaps: HEATMAP.tif TRUTH, scored per cell")
    h.add_argument("--threshold", type=_fraction(zero=True), metavar="P",
                   help="cells with probability >= P count as found (default 0.5)")
    h.add_argument("--label", metavar="NAME", help="the band (class) to score, by its name (default: the last band, "
                   "a binary model's positive class)")
    h.add_argument("--truth-classes", type=int_list, metavar="IDS",
                   help="truth class ids that count as positive, e.g. 1 (default: every class)")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_evaluate)
    return p
