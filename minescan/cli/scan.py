"""``minescan scan``: one scene into ``--out``, or a resumable run of many into ``--out-dir``.

Both go through the same :class:`~minescan.Scanner`: the arguments become one
:class:`~minescan.scan.plan.ScanOptions`, every input is resolved the same way
(a raster, a ``.SAFE`` product, a STAC item, band files), and ``--dry-run``
prints the resolved plan of each input instead of scanning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minescan.cli.options import add_max_memory, class_ids, max_memory, nonnegative, percentiles, positive, recipe_options
from minescan.defaults import DEFAULTS
from minescan.engine.backends import BACKENDS  # plain Python: no ONNX Runtime until a model loads
from minescan.errors import MinescanError



HEATMAP_SUFFIXES = (".tif", ".tiff")
CONTEXT_OPTIONS = ("mask", "mask_classes", "skip_masked", "max_masked", "masked", "concessions", "concession_field")  # a classifier's heatmap is a Cloud Optimized GeoTIFF


class UsageError(MinescanError):
    """Command-line arguments that do not fit together."""


def add_scan_options(p: argparse.ArgumentParser) -> None:
    """Tiling, detection and stitching options (``scan``)."""
    g = p.add_argument_group("tiling")
    g.add_argument("--tile", type=int, help=f"tile size in px (default: the model's fixed size, else {DEFAULTS.tile})")
    g.add_argument("--overlap", type=int, help=f"tile overlap in px; objects up to this size are stitched exactly (default {DEFAULTS.overlap})")
    g.add_argument("--stretch", type=percentiles, metavar="LOW,HIGH",
                   help="scene-wide percentile stretch instead of the model's normalisation, e.g. 2,98 (default: the model's)")
    g.add_argument("--nodata", type=float, help="nodata value (default: the product's, else the raster's own)")
    d = p.add_argument_group("detection")
    d.add_argument("--score-threshold", type=float, help=f"drop detections scoring below this (default {DEFAULTS.score_threshold:g})")
    d.add_argument("--batch", type=int, help=f"tiles per inference batch (default {DEFAULTS.batch})")
    d.add_argument("--threads", type=positive(int), help="ONNX Runtime intra-op threads per inference call (default: cores / --workers)")
    d.add_argument("--workers", type=positive(int),
                   help=f"inference calls running at once on the CPU (default: chosen from the model's measured cost and "
                   f"memory within --max-memory: one per core, at most {DEFAULTS.max_workers}, for cheap models, fewer "
                   "for costly ones; GPU backends: 1)")
    add_max_memory(d)
    d.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend,
                   help="where the model runs: auto (a GPU when ONNX Runtime has one, else the CPU), cpu, "
                   "cuda or tensorrt (ONNX Runtime's providers, needs onnxruntime-gpu); a .engine runs on TensorRT (default auto)")
    d.add_argument("--render", choices=("cpu", "gpu"), default="cpu",
                   help="where tiles are rendered and cut: cpu (the reader threads; default) or gpu (CUDA kernels, the "
                   "batch handed to the model in GPU memory; needs --backend cuda, 8/16 bit scenes, no --gate)")
    d.add_argument("--read-threads", type=int, help=f"threads decoding the raster (default: two per core, at most {DEFAULTS.max_read_threads})")
    d.add_argument("--iou", type=float, help=f"IoU at which two tiles' boxes are one object (default {DEFAULTS.iou:g})")
    d.add_argument("--class-agnostic", action="store_true", help="merge overlapping boxes across classes too")
    d.add_argument("--drop-parts", type=float, metavar="F",
                   help="drop a box lying at least F inside a larger box of another class, as a part of that object; "
                   "0 = off (default: the model's setting, else off)")
    d.add_argument("--labels", help="class names: a,b,c (ids 1..n), a .json {id: name} or a label_map.pbtxt (default: from the model)")
    h = p.add_argument_group("tile classifiers (heatmaps)")
    h.add_argument("--stride", type=int, metavar="PX", help="px between classifier windows (default half the window); "
                   "the heatmap has one cell per stride")
    h.add_argument("--regions", metavar="FILE", help="also write the connected areas at or above --threshold as polygons "
                   "(.gpkg, .geojson, ...) with area, cells, max and mean probability")
    h.add_argument("--threshold", type=float, default=0.5, help="probability of a region (default 0.5)")
    h.add_argument("--float", action="store_true", help="write probabilities as float32 (NaN nodata) instead of uint8 x254")
    c = p.add_argument_group("classifier gate (a cascade)")
    c.add_argument("--gate", metavar="CLASSIFIER", help="a tile classifier (.onnx) that screens each detector tile: the "
                   "tile's score is the max foreground probability of the classifier's windows inside it, and only tiles "
                   "scoring at least --gate-threshold are detected")
    c.add_argument("--gate-threshold", type=float, metavar="T",
                   help=f"gate score a tile needs to reach the detector, in [0, 1] (default {DEFAULTS.gate_threshold:g}; needs --gate)")
    d.add_argument("--shift-threshold", type=float, metavar="S",
                   help="flag a scene as unreliable when its rendered input lies further than S (training standard "
                   f"deviations) from the model's training input (default {DEFAULTS.shift_threshold:g}; needs the model's "
                   "input statistics)")
    q = p.add_argument_group("clouds and quality (masks)")
    q.add_argument("--mask", metavar="FILE|scl|none",
                   help="what masks the scene: a raster (any CRS and resolution; 0 = clear, anything else, its nodata and "
                   "what it does not cover = masked), scl (the L2A product's scene classification layer), or none "
                   "(default: the product's SCL when it has one, else none)")
    q.add_argument("--mask-classes", type=class_ids, metavar="IDS",
                   help="SCL classes masked, e.g. 3,8,9,10 (default 0,1,3,8,9,10,11: no data, saturated, cloud shadow, "
                   "medium and high probability cloud, thin cirrus, snow)")
    q.add_argument("--skip-masked", type=float, metavar="SHARE",
                   help=f"do not scan tiles at least this share masked (default {DEFAULTS.skip_masked:g})")
    q.add_argument("--max-masked", type=float, metavar="SHARE",
                   help=f"a detection more than this share masked is flagged or dropped (default {DEFAULTS.max_masked:g})")
    q.add_argument("--masked", choices=("flag", "drop"),
                   help=f"what happens to detections over --max-masked: flag (kept, flagged=1) or drop (default {DEFAULTS.masked})")
    k = p.add_argument_group("concessions (licensed areas)")
    k.add_argument("--concessions", metavar="FILE",
                   help="concession polygons (GeoPackage, GeoJSON, Shapefile; any CRS): each detection gets the concession "
                   "holding most of it and the share of its area inside any concession")
    k.add_argument("--concession-field", metavar="NAME",
                   help="the field naming a concession (default: the first of id, licence_id, license_id, name, concession; "
                   "else the feature id)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--out-dir``, ``--manifest``, ``--boa-offset``, ``--format``, ``--quicklook-size``; ``--stac-search`` and its filters."""
    from minescan.results.formats import RESULT_FORMATS

    g = p.add_argument_group("many scenes (resumable runs into a folder)")
    g.add_argument("--out-dir", help="run folder: one result and quicklook per scene, journal, run summary; "
                   "rerunning the same command resumes (needed for several scenes or --manifest)")
    g.add_argument("--manifest", action="append", default=[], metavar="FILE",
                   help="text file listing inputs, one per line (# comments; paths relative to the file); repeatable")
    g.add_argument("--boa-offset", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the offset that .SAFE products (baseline >= 04.00) and STAC items declare "
                   "(default; an explicit --offset wins)")
    g.add_argument("--format", choices=[ext.lstrip(".") for ext in RESULT_FORMATS], default=DEFAULTS.result_format,
                   help=f"result file format per scene (default {DEFAULTS.result_format})")
    g.add_argument("--baseline", metavar="RUN_DIR",
                   help="an earlier run's folder: the run's report (report.md/.html, changes.gpkg, chips/) says which "
                   "sites are new, gone, grown, shrunk or unchanged since, new sites outside concessions first")
    g.add_argument("--quicklook-size", type=int, default=DEFAULTS.quicklook_size, metavar="PX",
                   help=f"longest side of each scene's quicklook PNG; 0 for none (default {DEFAULTS.quicklook_size})")
    st = p.add_argument_group("scenes from a STAC API", "search a STAC API and scan the items it finds as a run "
                              "(needs --out-dir, or --dry-run); each item is saved to <out-dir>/sources/stac-items/"
                              "<id>.json, so rerunning the same command resumes the run")
    st.add_argument("--stac-search", metavar="URL", help="the STAC API's root URL, e.g. https://earth-search.aws.element84.com/v1")
    st.add_argument("--collection", action="append", metavar="NAME",
                    help=f"collection to search; repeatable (default {DEFAULTS.stac_collection})")
    st.add_argument("--bbox", metavar="W,S,E,N", help="items intersecting this box, in degrees: west,south,east,north")
    st.add_argument("--datetime", metavar="RANGE",
                    help="items acquired in this RFC 3339 interval, e.g. 2024-06-01/2024-08-31 (.. for an open end), or on one date")
    st.add_argument("--max-cloud", type=float, metavar="PCT", help="items whose eo:cloud_cover is below PCT percent")
    st.add_argument("--max-items", type=int, default=DEFAULTS.stac_max_items, metavar="N",
                    help=f"at most N items, in the API's order (default {DEFAULTS.stac_max_items})")


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """The options of a run on a Ray cluster (``--ray``)."""
    g = p.add_argument_group("Ray cluster (a run's scenes scanned by Ray actors; pip install 'minescan[ray]')")
    g.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                   help="scan the run's scenes on Ray: without ADDRESS on a local Ray instance started for the run, with "
                   "one on that cluster ('auto', 'ray://HOST:10001'); results, journal and summary stay on this machine")
    g.add_argument("--ray-workers", type=positive(int), metavar="N",
                   help="Ray actors, each with one loaded model (default: one per node, or one per GPU share with "
                   "--gpus-per-worker); --workers stays the concurrent inference calls inside each")
    g.add_argument("--gpus-per-worker", type=nonnegative(float), default=0.0, metavar="G",
                   help="GPUs each actor takes (e.g. 1, or 0.5 to share); 0: CPU threads (default)")
    g.add_argument("--cpus-per-worker", type=positive(int), metavar="C",
                   help="CPUs each actor takes and fills with its threads (default: the cluster's CPUs shared evenly)")
    g.add_argument("--split-rows", type=nonnegative(int), metavar="N",
                   help=f"cut each detector scene into parts of N tile rows scanned by different actors and stitched here "
                   f"(default: only scenes of more than {DEFAULTS.ray_split_tiles} tiles; 0: never)")
    g.add_argument("--ray-retries", type=nonnegative(int), default=DEFAULTS.ray_max_retries, metavar="N",
                   help=f"runs of a scene (or part) again after its worker died (default {DEFAULTS.ray_max_retries})")
    g.add_argument("--ray-runtime-env", metavar="JSON",
                   help="Ray runtime environment for the actors, as JSON (e.g. '{\"env_vars\": {...}}')")


LOCAL_RAY = "local"


def ray_settings(args: argparse.Namespace):
    """The ``--ray`` options as :class:`~minescan.scaleout.ray_run.RaySettings` (None without ``--ray``)."""
    if args.ray is None:
        for name in ("ray_workers", "cpus_per_worker", "split_rows"):
            if getattr(args, name) is not None:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} needs --ray")
        if args.gpus_per_worker:
            raise UsageError(f"--gpus-per-worker {args.gpus_per_worker:g} needs --ray")
        return None
    import json

    from minescan.scaleout.ray_run import RaySettings

    runtime_env = None
    if args.ray_runtime_env:
        try:
            runtime_env = json.loads(args.ray_runtime_env)
        except ValueError as exc:
            raise UsageError(f"--ray-runtime-env {args.ray_runtime_env!r} is not JSON: {exc}") from None
        if not isinstance(runtime_env, dict):
            raise UsageError(f"--ray-runtime-env {args.ray_runtime_env!r} must be a JSON object")
    return RaySettings(address=None if args.ray == LOCAL_RAY else args.ray, workers=args.ray_workers,
                       gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                       split_rows=args.split_rows, max_retries=args.ray_retries, runtime_env=runtime_env)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``scan`` to the command line."""
    from minescan.results.formats import RESULT_FORMATS

    formats = ", ".join(f"{ext} ({what})" for ext, what in RESULT_FORMATS.items())
    scan = sub.add_parser(
        "scan", parents=[recipe_options()], help="detect mining sites in scenes and write georeferenced results",
        description="Scan scenes with a detector: any GDAL raster (GeoTIFF, COG, VRT; uint8, int16, uint16, int32, "
        "uint32, float32, float64), a Sentinel-2 .SAFE product (folder, MTD_*.xml, .zip or SENTINEL2_L2A:... "
        "subdataset), a STAC item, a folder of band files or B04,B03,B02 files.",
    )
    scan.add_argument("scenes", nargs="*", metavar="SCENE", help="the scene(s) to scan (see above)")
    scan.add_argument("--model", required=True, help="detector in the TF Object Detection API contract (.onnx, or a TensorRT .engine)")
    scan.add_argument("--out", help=f"result file for one scene: {formats}")
    scan.add_argument("--quicklook", metavar="PNG", help="also write a quicklook PNG of the scene with its detections, "
                      f"or a classifier's probability over it ({DEFAULTS.quicklook_size} px a side; see --quicklook-size)")
    scan.add_argument("--dry-run", action="store_true",
                      help="print the resolved plan of each scene (bands, radiometry, tiles, backend, stitching, output, "
                      "and where each value came from) and exit without scanning")
    scan.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="show tracebacks with errors")
    add_scan_options(scan)
    add_run_options(scan)
    add_ray_options(scan)
    scan.set_defaults(handler=run_scan)


def scan_options(args: argparse.Namespace):
    """The arguments as :class:`~minescan.scan.plan.ScanOptions` (ranges checked there)."""
    from minescan.model.labels import parse_labels
    from minescan.scan.plan import ScanOptions

    return ScanOptions(
        bands=args.bands, tile=args.tile, overlap=args.overlap, batch=args.batch, score_threshold=args.score_threshold,
        gain=args.gain, offset=args.offset, scale=args.scale, stretch=args.stretch, nodata=args.nodata, iou=args.iou,
        class_agnostic=args.class_agnostic, drop_parts=args.drop_parts, read_threads=args.read_threads,
        product_offset=args.boa_offset, labels=parse_labels(args.labels) if args.labels else None,
        shift_threshold=args.shift_threshold, stride=args.stride, gate_threshold=args.gate_threshold,
        **{name: getattr(args, name, None) for name in CONTEXT_OPTIONS},  # bench has none of these: its defaults
    )


def progress_bar(total: int, label: str):
    """A tqdm bar over tiles on stderr when it is a terminal (else a silent one); call it with (done, total)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="tile", desc=label, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def load_scanner(args: argparse.Namespace, *, planning: bool = False):
    """The model, loaded once for every scene; a notice (a GPU package that cannot reach its GPU) goes to stderr.

    ``planning``: this process only plans (a Ray run's driver): the model loads on the CPU with one
    thread, whatever this machine has, and the workers load it as the arguments ask.
    """
    from minescan.scan.scanner import Scanner

    if args.gate_threshold is not None and not args.gate:
        raise UsageError(f"--gate-threshold {args.gate_threshold:g} needs --gate CLASSIFIER")
    from minescan.engine.memory_budget import MemoryBudgetError

    budget = max_memory(getattr(args, "max_memory", None))  # a malformed size fails before the model loads
    asked = {"backend": args.backend, "threads": args.threads, "workers": args.workers, "max_memory": budget,
             "render": getattr(args, "render", "cpu")}
    try:
        if planning and not _engine(args.model):
            from minescan.engine import load_detector

            def inspect(path):
                return load_detector(path, backend="cpu", threads=1, workers=1, planning_only=True)

            scanner = Scanner(inspect(args.model), gate=inspect(args.gate) if args.gate else None)
        else:
            scanner = Scanner(args.model, gate=args.gate, **asked)
    except MemoryBudgetError as exc:
        raise MemoryBudgetError(f"--max-memory {args.max_memory}: {exc}") from None
    scanner.loading = asked  # how the Ray workers load it
    if scanner.notice and not planning:
        print(f"minescan: note: {scanner.notice}", file=sys.stderr, flush=True)
    return scanner


def _engine(model: str) -> bool:
    """A TensorRT engine loads only with TensorRT (the planning driver must load it as asked)."""
    from minescan.engine.backends import is_engine_file

    return is_engine_file(model)


def gather_inputs(args: argparse.Namespace) -> list[str]:
    """Scenes from the command line, then from each manifest, then the items of --stac-search, once each, in order."""
    from minescan.raster.sources.resolve import absolute_input, read_manifest

    inputs = [absolute_input(text, Path.cwd()) for text in args.scenes]
    for manifest in args.manifest:
        inputs += read_manifest(manifest)
    inputs += [str(path) for path in _stac_scenes(args)]
    return list(dict.fromkeys(inputs))


_SEARCH_FLAGS = {"url": "--stac-search", "collections": "--collection", "bbox": "--bbox", "datetime": "--datetime",
                 "max_cloud": "--max-cloud", "max_items": "--max-items"}


def _stac_scenes(args: argparse.Namespace) -> list[Path]:
    """The item files of ``--stac-search`` (none without it): in ``<out-dir>/sources/stac-items``, else a temporary folder."""
    from minescan.raster.sources.stac_search import SearchValueError, StacSearch, parse_bbox, search_scenes

    given = getattr(args, "stac_search", None)
    if not given:
        stray = [flag for flag, value in (("--collection", args.collection), ("--bbox", args.bbox), ("--datetime", args.datetime),
                                          ("--max-cloud", args.max_cloud)) if value is not None]
        if stray:
            raise UsageError(f"{stray[0]} selects items of a STAC API search: give --stac-search URL")
        return []
    if not args.out_dir and not args.dry_run:
        raise UsageError("--stac-search scans a run: give --out-dir DIR (results, journal and the items found go there), "
                         "or --dry-run")
    try:
        search = StacSearch(given, collections=tuple(args.collection or (DEFAULTS.stac_collection,)),
                            bbox=parse_bbox(args.bbox) if args.bbox is not None else None, datetime=args.datetime,
                            max_cloud=args.max_cloud, max_items=args.max_items)
    except SearchValueError as exc:
        raise UsageError(exc.describe(_SEARCH_FLAGS.get(exc.setting, exc.setting))) from None
    if args.out_dir:
        from minescan.runs.batch import SOURCES_FOLDER

        folder = Path(args.out_dir) / SOURCES_FOLDER / "stac-items"
    else:  # a dry run writes nothing that lasts
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="minescan-stac-items-"))
        atexit.register(shutil.rmtree, folder, True)
    return search_scenes(search, folder)


def run_scan(args: argparse.Namespace) -> int:
    options = scan_options(args)  # a value out of range fails before the model loads
    if args.ray is not None and not args.out_dir and not args.dry_run:
        raise UsageError("--ray scans a run: give --out-dir DIR (results, journal and summary are written there)")
    if args.baseline is not None and not args.out_dir and not args.dry_run:
        raise UsageError(f"--baseline {args.baseline} compares a run with an earlier one: give --out-dir DIR "
                         "(for two result files: minescan compare OLD NEW --out changes.gpkg)")
    if args.out_dir or args.manifest or args.stac_search or len(args.scenes) != 1:
        return _run_many(args, options)
    if not args.out and not args.dry_run:
        raise UsageError("one scene needs --out FILE (or --out-dir DIR for a resumable run)")
    from minescan.results.formats import describe
    from minescan.results.writers import check_file_writable, check_writable

    raster_out = bool(args.out) and Path(args.out).suffix.lower() in HEATMAP_SUFFIXES
    if args.out:
        (check_file_writable if raster_out else check_writable)(args.out)
    if args.quicklook:
        check_file_writable(args.quicklook)
    if args.regions:
        check_writable(args.regions)
        if not 0 <= args.threshold <= 1:
            raise UsageError(f"--threshold {args.threshold:g} is out of range: must be in [0, 1]")
    scanner = load_scanner(args)
    if args.out and raster_out != (scanner.model.task == "classifier"):
        raise UsageError(f"--out {args.out}: a {'classifier writes a heatmap: give a .tif' if not raster_out else 'detector writes boxes: give .gpkg, .geojson, .shp, .fgb or .parquet'}")
    plan = scanner.plan(args.scenes[0], output=describe(args.out) if args.out else None, count_nodata_tiles=args.dry_run,
                        **options.__dict__)
    if args.dry_run:
        print(plan.explain())
        return 0
    bar = progress_bar(plan.tiles, plan.source.product_id)
    try:
        result = scanner.scan(plan, progress=bar)
    finally:
        bar.close()
    if scanner.model.task == "classifier":
        result.write(args.out, as_float=args.float)
        print(f"{result.scene}: {result.tiles} windows ({result.skipped} skipped as nodata), heatmap of "
              f"{result.probabilities.shape[2]} x {result.probabilities.shape[1]} cells of {result.stride} px, bands "
              f"{', '.join(result.band_labels)}, {result.seconds:.1f} s -> {args.out}")
        if args.regions:
            regions = result.write_regions(args.regions, args.threshold)
            print(f"regions at probability >= {args.threshold:g} -> {regions}")
        if args.quicklook:
            label = result.band_labels[result.class_id() - 1]
            print(f"quicklook of {label} -> {result.write_quicklook(args.quicklook, max_size=args.quicklook_size or None, threshold=args.threshold)}")
        warning = result.warning()
        if warning:
            print(f"minescan: warning: {warning}", file=sys.stderr, flush=True)
        return 0
    result.write(args.out)
    if args.quicklook:
        result.write_quicklook(args.quicklook, max_size=args.quicklook_size or None)
    warning = result.warning()
    if warning:
        print(f"minescan: warning: {warning}", file=sys.stderr, flush=True)
    flag = "" if result.reliable else f", FLAGGED as unreliable (input shift {result.input_shift:.2f})"
    gated = f", {result.gate_note()}" if plan.gate else ""
    print(
        f"{result.scene}: {result.tiles} tiles ({result.skipped} skipped as nodata{gated}), {len(result.detections)} detections{flag}, "
        f"{result.seconds:.1f} s, {result.tiles_per_second:.1f} tiles/s -> {args.out}"
    )
    if plan.quality is not None:
        print(f"{result.scene}: {result.quality_note()}")
    if plan.concessions is not None:
        from minescan.runs.batch import scene_context

        outside = scene_context(result)["outside"] or {}
        print(f"{result.scene}: outside every concession: "
              + (", ".join(f"{k} {v}" for k, v in sorted(outside.items())) or "none"))
    return 0


def _run_many(args: argparse.Namespace, options) -> int:
    from minescan.runs.batch import RunSettings, RunError, run_many

    if args.out:
        raise RunError(f"--out {args.out} names one result file; for several scenes, --manifest or --stac-search use --out-dir")
    keys = gather_inputs(args)
    if not keys:
        raise RunError("no scenes given: pass scene paths, .SAFE products, STAC items, --manifest FILE or --stac-search URL")
    if args.dry_run:
        return _dry_run_many(args, keys, options)
    if not args.out_dir:
        raise RunError("several scenes or --manifest need --out-dir DIR (a folder for one result per scene and the run journal)")
    if args.quicklook_size < 0:
        raise UsageError(f"--quicklook-size {args.quicklook_size} is out of range: 0 (no quicklooks) or a size in px")
    cluster = ray_settings(args)  # checked before the model loads
    if args.baseline is not None:
        from minescan.report.baseline import read_baseline

        read_baseline(args.baseline)  # a baseline that cannot be compared with fails before the night's scanning
        if Path(args.baseline).resolve() == Path(args.out_dir).resolve():
            raise UsageError(f"--baseline {args.baseline} is the run folder itself; give an earlier run's folder")
    scanner = load_scanner(args, planning=cluster is not None)
    settings = RunSettings(out_dir=Path(args.out_dir), result_format=args.format, quicklook_size=args.quicklook_size,
                           verbose=args.verbose, ray=cluster, baseline=Path(args.baseline) if args.baseline else None)
    return run_many(keys, scanner, options, settings)


def _dry_run_many(args: argparse.Namespace, keys: list[str], options) -> int:
    """Each input's plan, or why it cannot be scanned; exit 1 if any cannot."""
    cluster = ray_settings(args)
    scanner = load_scanner(args)
    failed = 0
    for index, key in enumerate(keys, start=1):
        print(f"[{index}/{len(keys)}] {key}")
        try:
            plan = scanner.plan(key, count_nodata_tiles=True, **options.__dict__)
            print(plan.explain())
            if cluster is not None:
                from minescan.scaleout.ray_run import describe_parts

                print(f"  on Ray: {describe_parts(plan, cluster.split_rows)}")
        except MinescanError as exc:
            failed += 1
            print(f"cannot be scanned: {exc}")
        print()
    return 1 if failed else 0
