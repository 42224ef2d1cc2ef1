"""Many scenes in one run: resolve, skip what is done, scan the rest, report.

Each input is resolved (:mod:`minescan.raster.sources.resolve`), checked against the
journal (:mod:`minescan.runs.journal`) and, unless an earlier run finished it
under the same fingerprint, scanned by :func:`minescan.scan.scan_scene`; its
result ``<product_id>.gpkg`` and quicklook ``<product_id>.png`` land in the
run folder.  A scene that fails (unreadable, corrupt, unwritable) is recorded
with its reason and the run goes on; faults of the run itself (model, run
folder, manifest) stop it before any scanning.  Ctrl-C or SIGTERM stop it
between or inside scenes; the summary is written either way and the exit
code says how it went: 0 all done, 1 some failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import signal
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from minescan.engine import Detector, load_detector
from minescan.model.labels import parse_labels
from minescan.errors import MinescanError
from minescan.runs.fingerprint import file_digest, fingerprint
from minescan.runs.journal import DONE, Journal, Outcome
from minescan.runs.outdir import lock_run_folder
from minescan.runs.progress import RunProgress
from minescan.results.quicklook import write_quicklook
from minescan.runs.report import RunSummary, SceneReport, write_summary
from minescan.raster.sources.resolve import absolute_input, read_manifest, resolve
from minescan.raster.sources.source import Source, first_line, safe_name
from minescan.scan.stream import ScanOptions, scan_scene, tile_size
from minescan.raster.grid import TileGrid
from minescan.results.writers import write_detections
from minescan.raster.scene import Scene

SOURCES_FOLDER = "sources"


class RunError(MinescanError):
    """A run that cannot start."""


@dataclass(frozen=True)
class RunContext:
    """What every scene of a run shares."""

    detector: Detector
    labels: Mapping[int, str]
    model_digest: str
    options: ScanOptions
    out_dir: Path
    journal: Journal
    progress: RunProgress
    boa_offset: bool
    result_format: str
    quicklook_size: int
    verbose: bool


def gather_inputs(args: argparse.Namespace) -> list[str]:
    """Scenes from the command line, then from each manifest, once each, in order."""
    inputs = [absolute_input(text, Path.cwd()) for text in args.scenes]
    for manifest in args.manifest:
        inputs += read_manifest(manifest)
    return list(dict.fromkeys(inputs))


def scene_options(options: ScanOptions, source: Source, detector: Detector, boa_offset: bool) -> ScanOptions:
    """The options for one scene: what the source knows fills what the user left open.

    A source's own band layout (a stack minescan built) beats ``--bands``, which is meant
    for rasters whose layout only the user knows; the model's recipe comes last.
    """
    recipe = detector.metadata.recipe.bands
    return dataclasses.replace(
        options,
        bands=source.bands or options.bands or (tuple(recipe) if recipe else None),
        offset=options.offset if options.offset is not None else (source.offset if boa_offset else None),
        nodata=options.nodata if options.nodata is not None else source.nodata,
    )


def _unique_ids(sources: list[Source | MinescanError], keys: list[str]) -> list[Source | MinescanError]:
    """Sources whose product ids clash get a suffix from their input, so no result overwrites another."""
    counts = Counter(s.product_id for s in sources if isinstance(s, Source))
    return [
        dataclasses.replace(s, product_id=f"{s.product_id}-{hashlib.sha256(key.encode()).hexdigest()[:8]}")
        if isinstance(s, Source) and counts[s.product_id] > 1 else s
        for s, key in zip(sources, keys)
    ]


def _resolve_all(keys: list[str], folder: Path) -> list[Source | MinescanError]:
    resolved: list[Source | MinescanError] = []
    for key in keys:
        try:
            resolved.append(resolve(key, folder))
        except MinescanError as exc:
            resolved.append(exc)
    return _unique_ids(resolved, keys)


def _classes(detections, labels: Mapping[int, str]) -> dict[str, int]:
    return dict(Counter(labels.get(int(c), str(int(c))) for c in detections.classes))


def _scan(ctx: RunContext, source: Source, options: ScanOptions) -> Outcome:
    """Scan one scene and put its files in place (not yet marked done)."""
    with Scene(source.dataset, bands=options.bands, nodata=options.nodata) as scene:
        tiles = len(TileGrid(scene.width, scene.height, tile_size(options, ctx.detector), options.overlap))
    ctx.progress.scene_started(source.product_id, tiles)
    result = scan_scene(source.dataset, ctx.detector, options, on_tile=ctx.progress.tiles_done)
    quicklook = ctx.out_dir / f"{source.product_id}.png"
    if ctx.quicklook_size:
        write_quicklook(quicklook, source.dataset, result.detections, bands=options.bands, nodata=options.nodata,
                        max_size=ctx.quicklook_size)
    else:
        quicklook.unlink(missing_ok=True)  # an earlier run's quicklook would show other detections
    path = write_detections(ctx.out_dir / f"{source.product_id}.{ctx.result_format}", result.detections,
                            transform=result.transform, crs=result.crs, labels=ctx.labels, scene=source.product_id)
    return Outcome(str(path), str(quicklook) if ctx.quicklook_size else None, result.tiles, result.skipped, _classes(result.detections, ctx.labels), result.seconds)


def _failure(ctx: RunContext, exc: Exception) -> str:
    if isinstance(exc, MinescanError):
        return str(exc)
    # Not a fault in the input but a bug; one scene must still not sink the night's run.
    if ctx.verbose:
        traceback.print_exc()
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


def run_scene(ctx: RunContext, key: str, source: Source | MinescanError) -> SceneReport:
    """Bring one input to ``done`` or ``failed`` (or skip it if an earlier run finished it)."""
    if isinstance(source, MinescanError):
        product_id = safe_name(Path(key.split(",")[0]).stem)
        ctx.journal.fail(key, product_id, "", str(source))
        return SceneReport(key, product_id, "failed", attempts=1, error=str(source))
    options = scene_options(ctx.options, source, ctx.detector, ctx.boa_offset)
    stamp = fingerprint(ctx.model_digest, options, source, ctx.labels, ctx.result_format)
    entry = ctx.journal.get(key)
    if entry and entry.state == DONE and entry.fingerprint == stamp and entry.outcome and Path(entry.outcome.result).is_file():
        return SceneReport(key, source.product_id, "done", resumed=True, attempts=entry.attempts, outcome=entry.outcome)
    ctx.journal.start(key, source.product_id, stamp)
    attempts = (entry.attempts if entry else 0) + 1
    try:
        outcome = _scan(ctx, source, options)
    except Exception as exc:  # KeyboardInterrupt is not an Exception: it stops the run, the row stays 'running'
        reason = _failure(ctx, exc)
        ctx.journal.fail(key, source.product_id, stamp, reason)
        return SceneReport(key, source.product_id, "failed", attempts=attempts, error=reason)
    ctx.journal.finish(key, outcome)
    return SceneReport(key, source.product_id, "done", attempts=attempts, outcome=outcome)


def _line(index: int, total: int, report: SceneReport) -> str:
    head = f"[{index}/{total}] {report.product_id}:"
    if report.status == "failed":
        return f"{head} failed: {report.error}"
    o = report.outcome
    assert o is not None
    if report.resumed:
        return f"{head} done in an earlier run, skipped -> {o.result}"
    classes = ", ".join(f"{k} {v}" for k, v in sorted(o.detections.items()))
    return (f"{head} {o.tiles} tiles ({o.skipped} nodata), {sum(o.detections.values())} detections"
            f"{f' ({classes})' if classes else ''}, {o.seconds:.1f} s -> {o.result}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(ctx: RunContext, keys: list[str]) -> tuple[list[SceneReport], bool]:
    """Reports for every input in order (``pending`` past an interruption), and whether the run was interrupted."""
    sources = _resolve_all(keys, ctx.out_dir / SOURCES_FOLDER)
    reports: list[SceneReport] = []
    try:
        for index, (key, source) in enumerate(zip(keys, sources), start=1):
            reports.append(run_scene(ctx, key, source))
            ctx.progress.scene_finished(_line(index, len(keys), reports[-1]))
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:
        ctx.progress.close()
    pending = [
        SceneReport(key, s.product_id if isinstance(s, Source) else safe_name(Path(key).stem), "pending")
        for key, s in list(zip(keys, sources))[len(reports):]
    ]
    return reports + pending, interrupted


def run_many(args: argparse.Namespace, options: ScanOptions) -> int:
    """``minescan scan`` over many scenes into ``--out-dir``; the exit code (see the module docstring)."""
    keys = gather_inputs(args)
    if not keys:
        raise RunError("no scenes given: pass scene paths, .SAFE products, STAC items or --manifest FILE")
    if getattr(args, "out", None):
        raise RunError(f"--out {args.out} names one result file; for several scenes or --manifest use --out-dir")
    if not args.out_dir:
        raise RunError("several scenes or --manifest need --out-dir DIR (a folder for one result per scene and the run journal)")
    detector = load_detector(args.model, backend=args.backend, threads=args.threads, workers=args.workers, max_batch=args.batch)
    if detector.notice:
        print(f"note: {detector.notice}", flush=True)
    labels = parse_labels(args.labels) if args.labels else dict(detector.metadata.labels)
    out_dir = Path(args.out_dir)
    lock = lock_run_folder(out_dir)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Journal(out_dir) as journal:
            ctx = RunContext(detector, labels, file_digest(args.model), options, out_dir, journal, RunProgress(len(keys)),
                             args.boa_offset, args.format, args.quicklook_size, args.verbose)
            reports, interrupted = _run(ctx, keys)
        summary = RunSummary(tuple(reports), str(args.model), str(out_dir), interrupted)
        _, markdown = write_summary(out_dir, summary)
    finally:
        signal.signal(signal.SIGTERM, previous)
        lock.close()
    print(f"{summary.count('done')}/{len(keys)} scenes done, {summary.count('failed')} failed, {summary.count('pending')} pending; "
          f"{summary.tiles} tiles, {sum(summary.detections.values())} detections; summary: {markdown}")
    if summary.interrupted:
        raise KeyboardInterrupt
    failed = [s for s in summary.scenes if s.status == "failed"]
    if failed:
        names = ", ".join(s.product_id for s in failed[:5]) + (", ..." if len(failed) > 5 else "")
        print(f"minescan: error: {len(failed)} of {len(keys)} scenes failed ({names}); reasons in {markdown}", file=sys.stderr)
        return 1
    return 0
