"""The ``minescan`` command line.

Faults in user input (:class:`~minescan.errors.MinescanError`) print one line
on stderr and exit 1; ``--verbose`` adds the traceback.  Ctrl-C exits 130;
result files are written atomically, so nothing half-written is left.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from minescan import __version__
from minescan.engine.backends import BACKENDS
from minescan.errors import MinescanError
from minescan.cli.evaluate import add_parser as add_evaluate_parser
from minescan.cli.build import add_build_parser
from minescan.cli.export import add_parsers as add_export_parsers
from minescan.cli.runs import add_run_arguments

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _bands(value: str) -> tuple[int, ...]:
    try:
        bands = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1-based band indexes like 3,2,1, got {value!r}") from None
    if len(bands) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 band indexes (red, green, blue), got {value!r}")
    return bands


def _percentiles(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH percentiles like 2,98, got {value!r}") from None
    return low, high


def _positive(kind):
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return number

    return parse


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1] (0 = off), got {value!r}")
    return number


def _recipe_options() -> argparse.ArgumentParser:
    """--bands, --gain, --offset: how a scene becomes the model's RGB (shared by scan and export)."""
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("radiometry")
    g.add_argument("--bands", type=_bands, help="1-based red,green,blue band indexes, e.g. 3,2,1 for a B02,B03,B04,B08 stack "
                   "(default: from the model, else colour interpretation or B04/B03/B02 descriptions)")
    g.add_argument("--gain", type=_positive(float), help="true-colour gain on reflectance for uint16 scenes (default 2.5)")
    g.add_argument("--offset", type=float, help="added to DN before /10000, e.g. -1000 for L2A baseline >= 04.00 (default 0)")
    return parent


def _add_scan_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tiling")
    g.add_argument("--tile", type=_positive(int), help="tile size in px (default: the model's fixed size, else 640)")
    g.add_argument("--overlap", type=int, default=128, help="tile overlap in px; objects up to this size are stitched exactly (default 128)")
    g.add_argument("--stretch", type=_percentiles, metavar="LOW,HIGH", help="scene-wide percentile stretch instead of the gain, e.g. 2,98")
    g.add_argument("--nodata", type=float, help="nodata value (default: the raster's own)")
    d = p.add_argument_group("detection")
    d.add_argument("--score-threshold", type=float, default=0.5, help="drop detections scoring below this (default 0.5)")
    d.add_argument("--batch", type=_positive(int), default=4, help="tiles per inference batch (default 4)")
    d.add_argument("--threads", type=_positive(int), help="ONNX Runtime intra-op threads per inference call (default: cores / --workers)")
    d.add_argument("--workers", type=_positive(int),
                   help="inference calls running at once on the CPU (default: one per core, at most 4; GPU backends: 1)")
    d.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="where the model runs: auto (a GPU when there is one, else the CPU, saying so), cpu, "
                   "cuda or tensorrt (ONNX Runtime's providers, needs onnxruntime-gpu); a .engine runs on TensorRT (default auto)")
    d.add_argument("--read-threads", type=_positive(int), help="threads decoding the raster (default: two per core, at most 8)")
    d.add_argument("--iou", type=float, default=0.4, help="IoU at which two tiles' boxes are one object (default 0.4)")
    d.add_argument("--class-agnostic", action="store_true", help="merge overlapping boxes across classes too")
    d.add_argument("--drop-parts", type=_share, metavar="F",
                   help="drop a box lying at least F inside a larger box of another class, as a part of that object; "
                   "0 = off (default: the model's setting, else off)")
    d.add_argument("--labels", help="class names: a,b,c (ids 1..n), a .json {id: name} or a label_map.pbtxt (default: from the model)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minescan", description="Scan Sentinel-2 scenes for mining sites.")
    parser.add_argument("--version", action="version", version=f"minescan {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    recipe = _recipe_options()
    scan = sub.add_parser("scan", parents=[recipe], help="detect objects in a GeoTIFF scene and write georeferenced results")
    scan.add_argument("scenes", nargs="*", metavar="SCENE",
                      help="GeoTIFF/COG (uint8 or uint16), .SAFE product, STAC item JSON, folder of band files or B04,B03,B02 files")
    scan.add_argument("--model", required=True, help="detector in the TF Object Detection API contract (.onnx)")
    scan.add_argument("--out", help="result file for one scene: .geojson (WGS84) or .gpkg (scene CRS)")
    scan.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_scan_options(scan)
    add_run_arguments(scan)
    scan.set_defaults(handler=run_scan)

    demo = sub.add_parser("demo", help="generate a Sentinel-2-like mining scene, scan it with the shipped demo detector, score it")
    demo.add_argument("--out-dir", default="minescan-demo", help="where to write the scene and results (default ./minescan-demo)")
    demo.add_argument("--seed", type=int, help="scene seed (default: a new one each run)")
    demo.add_argument("--size", default="4096x4096", help="scene WIDTHxHEIGHT in px (default 4096x4096, 1678 km2)")
    demo.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="which shipped model to run (default fp32)")
    demo.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_run_demo)

    bench = sub.add_parser("bench", parents=[recipe], help="profile a scan: per-stage times, model-only floor, pipeline efficiency, peak RSS")
    bench.add_argument("scene", help="GeoTIFF/COG to scan")
    bench.add_argument("--model", required=True, help="detector in the model contract")
    bench.add_argument("--batch", type=_int_list, default=[1, 4, 8], help="batch sizes to try, e.g. 1,4,8 (default)")
    bench.add_argument("--threads", type=_int_list, help="ONNX Runtime intra-op threads per call to try, e.g. 1,2 (default: cores / workers)")
    bench.add_argument("--workers", type=_int_list, help="concurrent inference calls to try, e.g. 1,2 (default: one per core, at most 4)")
    bench.add_argument("--backend", choices=BACKENDS, default="auto", help="where the model runs (see scan --backend; default auto)")
    bench.add_argument("--read-threads", type=_positive(int), help="reader threads (default: two per core, at most 8)")
    bench.add_argument("--tile", type=_positive(int), help="tile size in px (default: the model's, else 640)")
    bench.add_argument("--overlap", type=int, default=128, help="tile overlap in px (default 128)")
    bench.add_argument("--score-threshold", type=float, default=0.5, help="detection score threshold (default 0.5)")
    bench.add_argument("--json", help="also write the figures as JSON here")
    bench.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    bench.set_defaults(handler=_run_bench)

    add_export_parsers(sub, recipe)
    add_build_parser(sub)
    add_evaluate_parser(sub)
    return parser


def _int_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,4,8, got {value!r}") from None
    if any(n <= 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"values must be positive, got {value!r}")
    return numbers


def _read_threads(args: argparse.Namespace) -> dict:
    """``--read-threads`` when given; otherwise ScanOptions' default (two per core)."""
    return {"read_threads": args.read_threads} if args.read_threads else {}


def _run_bench(args: argparse.Namespace) -> int:
    from minescan.scan.bench import bench_setting, format_table, write_json
    from minescan.engine import load_detector
    from minescan.scan.stream import ScanOptions

    options = ScanOptions(
        bands=args.bands, tile=args.tile, overlap=args.overlap, gain=args.gain, offset=args.offset,
        score_threshold=args.score_threshold, **_read_threads(args),
    )
    probe = load_detector(args.model, backend=args.backend)  # a bad model fails here, before any timing
    print(f"backend: {probe.backend}" + (f" ({probe.notice})" if probe.notice else ""))
    def make(threads: int | None, workers: int | None, batch: int):
        return load_detector(args.model, backend=args.backend, threads=threads, workers=workers, max_batch=batch)

    results = [
        bench_setting(args.scene, lambda b: make(threads, workers, b), batch, options)
        for threads in (args.threads or [None])
        for workers in (args.workers or [None])
        for batch in args.batch
    ]
    print(format_table(results))
    if args.json:
        write_json(args.json, results, args.scene, args.model)
        print(f"wrote {args.json}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from minescan.demo import run_demo

    return run_demo(args)


def _options(args: argparse.Namespace):
    from minescan.scan.stream import ScanOptions
    from minescan.scan.stitch import StitchSettings

    return ScanOptions(
        bands=args.bands,
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        score_threshold=args.score_threshold,
        gain=args.gain,
        offset=args.offset,
        stretch=args.stretch,
        nodata=args.nodata,
        **_read_threads(args),
        stitch=StitchSettings(iou_threshold=args.iou, class_agnostic=args.class_agnostic, drop_parts=args.drop_parts),
    )


class UsageError(MinescanError):
    """Command-line arguments that do not fit together."""


def run_scan(args: argparse.Namespace) -> int:
    if args.out_dir or args.manifest or len(args.scenes) != 1:
        from minescan.runs.batch import run_many

        return run_many(args, _options(args))
    if not args.out:
        raise UsageError("one scene needs --out FILE (or --out-dir DIR for a resumable run)")
    from minescan.engine import load_detector
    from minescan.model.labels import parse_labels
    from minescan.scan.stream import scan_scene
    from minescan.results.writers import check_writable, write_detections

    check_writable(args.out)
    detector = load_detector(args.model, backend=args.backend, threads=args.threads, workers=args.workers, max_batch=args.batch)
    if detector.notice:  # on stdout: stderr carries only the one-line error
        print(f"note: {detector.notice}", flush=True)
    labels = parse_labels(args.labels) if args.labels else dict(detector.metadata.labels)
    result = scan_scene(args.scenes[0], detector, _options(args))
    write_detections(args.out, result.detections, transform=result.transform, crs=result.crs, labels=labels, scene=result.scene)
    print(
        f"{result.scene}: {result.tiles} tiles ({result.skipped} skipped as nodata), {len(result.detections)} detections, "
        f"{result.seconds:.1f} s, {result.tiles_per_second:.1f} tiles/s -> {args.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except MinescanError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"minescan: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("minescan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
