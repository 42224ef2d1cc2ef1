"""``minescan demo``: a fresh Sentinel-2-like mining scene scanned with the shipped detector and scored."""

from __future__ import annotations

import argparse


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 4096x4096, got {value!r}") from None
    if width < 128 or height < 128:
        raise argparse.ArgumentTypeError(f"{value} is too small (at least 128x128)")
    return width, height


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="generate a Sentinel-2-like mining scene, scan it with the shipped demo detector (or --classifier), score it")
    demo.add_argument("--out-dir", help="where to write the scene and results (default ./minescan-demo; with --change "
                      "./minescan-morning)")
    demo.add_argument("--seed", type=int, help="scene seed (default: a new one each run)")
    demo.add_argument("--size", type=_size, help="scene WIDTHxHEIGHT in px (default 4096x4096, 1678 km2; with --change 2048x2048)")
    demo.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="which shipped model to run (default fp32)")
    demo.add_argument("--classifier", action="store_true",
                      help="scan with the shipped tile classifier instead: a probability heatmap, its regions and quicklook, "
                      "scored per cell against the truth")
    demo.add_argument("--change", action="store_true",
                      help="the morning run instead: two dates of a scene with clouds and a cadastre of concessions, the first "
                      "scanned into last_week/, the second into today/ with --baseline last_week --concessions: a report of "
                      "what changed, new sites outside concessions first, with chips")
    demo.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="show tracebacks with errors")
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from minescan.demo import run_change_demo, run_demo

    if args.change:
        if args.classifier:
            from minescan.demo import DemoError

            raise DemoError("--change runs the detector (its sites are compared); it takes no --classifier")
        run_change_demo(args.out_dir or "minescan-morning", seed=args.seed, size=args.size or (2048, 2048),
                        precision=args.precision)
        return 0
    run_demo(args.out_dir or "minescan-demo", seed=args.seed, size=args.size or (4096, 4096), precision=args.precision,
             classifier=args.classifier)
    return 0
