"""``minescan calibrate-gate``: the highest gate threshold that keeps the detector's recall on labelled scenes.

Prints, for each candidate threshold, the detector's recall against the
truth, the share of the ungated recall it keeps, and the share of tiles the
gate skips (:mod:`minescan.scan.calibrate_gate`), and names the highest
threshold keeping ``--recall`` of the ungated recall; exit 1 when none does.
"""

from __future__ import annotations

import argparse

from minescan.cli.options import positive, recipe_options
from minescan.defaults import DEFAULTS
from minescan.engine.backends import BACKENDS
from minescan.errors import MinescanError


class CalibrateUsageError(MinescanError):
    """Arguments of calibrate-gate that do not fit together."""


def _thresholds(value: str) -> list[float]:
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thresholds like 0,0.05,0.2, got {value!r}") from None
    if any(not 0 <= n <= 1 for n in numbers):
        raise argparse.ArgumentTypeError(f"thresholds must be in [0, 1], got {value!r}")
    return numbers


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate-gate`` to the command line."""
    p = sub.add_parser(
        "calibrate-gate", parents=[recipe_options()],
        help="pick the classifier gate's threshold from the detector's recall on labelled scenes",
        description="Scan each labelled SCENE once with the detector while the gate scores every tile, then print "
        "for each candidate threshold the detector's recall against TRUTH and the share of tiles the gate would "
        "skip, and the highest threshold whose recall reaches --recall (exit 1 if none does).",
    )
    p.add_argument("files", nargs="+", metavar="SCENE TRUTH", help="pairs of a scene and its truth file (class_id per feature)")
    p.add_argument("--detector", required=True, help="the detector (.onnx)")
    p.add_argument("--gate", required=True, help="the tile classifier screening the detector's tiles (.onnx)")
    p.add_argument("--recall", type=float, default=0.99,
                   help="share of the ungated detector's recall the threshold must keep, in (0, 1] (default 0.99)")
    p.add_argument("--thresholds", type=_thresholds, metavar="T,T,...",
                   help="candidate thresholds (default 0 to 0.9, dense near 0)")
    p.add_argument("--tile", type=int, help=f"detector tile size in px (default: the model's, else {DEFAULTS.tile})")
    p.add_argument("--overlap", type=int, help=f"tile overlap in px (default {DEFAULTS.overlap})")
    p.add_argument("--score-threshold", type=float,
                   help=f"detections counted for recall (default {DEFAULTS.score_threshold:g}, the scan's default)")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend, help="where the models run (default auto)")
    p.add_argument("--threads", type=positive(int), help="ONNX Runtime intra-op threads per call (default: cores / workers)")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from minescan.scan.calibrate_gate import CANDIDATES, calibrate
    from minescan.scan.plan import ScanOptions
    from minescan.scan.scanner import Scanner

    if len(args.files) % 2:
        raise CalibrateUsageError(f"give SCENE TRUTH pairs; {len(args.files)} files is an odd number")
    options = ScanOptions(tile=args.tile, overlap=args.overlap, score_threshold=args.score_threshold, bands=args.bands,
                          gain=args.gain, offset=args.offset, scale=args.scale)
    if not 0 < args.recall <= 1:
        raise CalibrateUsageError(f"--recall {args.recall:g} is out of range: must be in (0, 1]")
    scanner = Scanner(args.detector, backend=args.backend, threads=args.threads, gate=args.gate)
    pairs = list(zip(args.files[::2], args.files[1::2]))
    result = calibrate(scanner, pairs, args.recall, thresholds=args.thresholds or CANDIDATES,
                       **{k: v for k, v in options.__dict__.items() if v is not None and k != "class_agnostic"
                          and k != "product_offset"})
    print(f"{scanner.gate_name} gating {scanner.model.name} on {len(pairs)} labelled scene(s), "
          f"{result.points[0].truth} objects, {result.points[0].tiles} tiles:")
    print(result.format())
    choice = result.choice
    if choice is None:
        print(f"no threshold keeps {args.recall:.1%} of the ungated recall ({result.points[0].recall:.3f})")
        return 1
    print(f"gate threshold {choice.threshold:g}: keeps {choice.kept:.1%} of the ungated recall (recall "
          f"{choice.recall:.3f}, ungated {result.points[0].recall:.3f}), {choice.skipped:.1%} of tiles skipped (minescan scan --gate {scanner.gate_name} --gate-threshold {choice.threshold:g})")
    return 0
