"""``minescan bench``: per-stage times, the model-only floor and the pipeline, per batch x threads x workers.

A detector is profiled over its tiles (read, radiometry, inference, stitch,
write); a tile classifier over its windows, every ``--stride`` px (default
half the window, as ``scan``), with the heatmap's accumulate stage in place
of stitching (:mod:`minescan.scan.bench`).
"""

from __future__ import annotations

import argparse

from minescan.cli.options import add_max_memory, int_list, max_memory, positive, recipe_options
from minescan.cli.scan import BACKENDS, UsageError, load_scanner, scan_options
from minescan.defaults import DEFAULTS

DETECTOR_ONLY = ("overlap", "score_threshold")  # None unless given
CLASSIFIER_ONLY = ("stride",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", parents=[recipe_options()],
                           help="profile a scan: per-stage times, model-only floor, pipeline efficiency, peak RSS")
    bench.add_argument("scene", help="the scene to scan (any input scan takes)")
    bench.add_argument("--model", required=True, help="detector in the model contract, or a tile classifier")
    bench.add_argument("--batch", type=int_list, default=[1, 4, 8], help="batch sizes to try, e.g. 1,4,8 (default)")
    bench.add_argument("--threads", type=int_list, help="ONNX Runtime intra-op threads per call to try, e.g. 1,2 (default: cores / workers)")
    bench.add_argument("--workers", type=int_list,
                       help=f"concurrent inference calls to try, e.g. 1,2 (default: one per core, at most {DEFAULTS.max_workers})")
    bench.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend, help="where the model runs (see scan --backend; default auto)")
    bench.add_argument("--render", choices=("cpu", "gpu"), default="cpu",
                       help="where tiles are rendered and cut (see scan --render; gpu needs --backend cuda)")
    bench.add_argument("--read-threads", type=int, help=f"reader threads (default: two per core, at most {DEFAULTS.max_read_threads})")
    bench.add_argument("--tile", type=int, help=f"tile size in px (default: the model's, else {DEFAULTS.tile})")
    bench.add_argument("--overlap", type=int, help=f"detectors: tile overlap in px (default {DEFAULTS.overlap})")
    bench.add_argument("--score-threshold", type=float, help=f"detectors: detection score threshold (default {DEFAULTS.score_threshold:g})")
    bench.add_argument("--stride", type=positive(int), metavar="PX",
                       help="tile classifiers: px between windows (default half the window, as scan)")
    add_max_memory(bench)
    bench.add_argument("--json", help="also write the figures as JSON here")
    bench.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="show tracebacks with errors")
    bench.add_argument("--gate", metavar="CLASSIFIER", help="detectors: profile with this classifier gate (see scan --gate)")
    bench.add_argument("--gate-threshold", type=float, metavar="T",
                       help=f"the gate's threshold (default {DEFAULTS.gate_threshold:g}; needs --gate)")
    bench.set_defaults(handler=run_bench, stretch=None, nodata=None, iou=None, class_agnostic=False, drop_parts=None,
                       boa_offset=True, labels=None, shift_threshold=None, float=False,
                       regions=None, threshold=0.5)


def _flags(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]


def run_bench(args: argparse.Namespace) -> int:
    from minescan.scan.bench import (
        bench_setting, format_decode_floor, format_table, heatmap_layout, measure_decode_floor, with_decode_floor, write_json,
    )
    from minescan.scan.scanner import Scanner

    args.batch, batches = None, args.batch
    options = scan_options(args)
    threads_list, workers_list = args.threads, args.workers
    args.threads = args.workers = None
    probe = load_scanner(args)  # a bad model fails here, before any timing
    task = probe.model.task
    wrong = _flags(args, DETECTOR_ONLY if task == "classifier" else CLASSIFIER_ONLY)
    if wrong:
        kind, hint = (("tile classifier", "its windows overlap by window - stride: use --stride") if task == "classifier"
                      else ("detector", "--stride sets a tile classifier's windows"))
        raise UsageError(f"{', '.join(wrong)} not for {args.model}, a {kind} ({hint})")
    budget = max_memory(args.max_memory)
    print(f"backend: {probe.backend}")
    print(f"calls: {probe.model.describe_split()}")
    if task == "classifier":  # the windows and cells, and a bad --stride fails here, before any timing
        plan = probe.plan(args.scene, **options.__dict__)
        layout = heatmap_layout(plan)
        rows, cols = layout.window_shape
        print(f"tile classifier: {layout.window} px windows every {layout.stride} px [{plan.origins['overlap'].split('[')[-1]}, "
              f"{cols} x {rows} = {len(layout)} windows, heatmap {layout.shape[1]} x {layout.shape[0]} cells")

    def make(threads: int | None, workers: int | None):
        return lambda: Scanner(args.model, backend=args.backend, threads=threads, workers=workers, gate=args.gate,
                               max_memory=budget, render=args.render)

    results = [
        bench_setting(args.scene, make(threads, workers), batch, options)
        for threads in (threads_list or [None])
        for workers in (workers_list or [None])
        for batch in batches
    ]
    floor = measure_decode_floor(probe.plan(args.scene, **options.__dict__))
    results = with_decode_floor(results, floor)
    print(format_table(results))
    print(format_decode_floor(floor, results))
    if args.json:
        write_json(args.json, results, args.scene, args.model, floor)
        print(f"wrote {args.json}")
    return 0
