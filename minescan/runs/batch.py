"""Many scenes in one run: resolve, skip what is done, scan the rest, report.

Each input is resolved (:mod:`minescan.raster.sources.resolve`, as for one
scene), planned (:meth:`minescan.Scanner.plan`), checked against the journal
(:mod:`minescan.runs.journal`) and, unless an earlier run finished it under
the same fingerprint, scanned by the same :class:`~minescan.Scanner`; its
result ``<product_id>.gpkg`` and quicklook ``<product_id>.png`` land in the
run folder.  A scene that fails (unreadable, corrupt, unwritable) is recorded
with its reason and the run goes on; faults of the run itself (model, run
folder, manifest) stop it before any scanning.  Ctrl-C or SIGTERM stop it
between or inside scenes; the summary is written either way and the exit
code says how it went: 0 all done, 1 some failed, 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import sys
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from minescan.errors import MinescanError
from minescan.runs.fingerprint import file_digest, fingerprint
from minescan.runs.journal import DONE, Journal, Outcome
from minescan.runs.outdir import lock_run_folder
from minescan.runs.progress import RunProgress
from minescan.runs.report import SUMMARY_MARKDOWN, RunSummary, SceneReport, write_summary
from minescan.raster.sources.resolve import resolve
from minescan.raster.sources.source import Source, first_line, safe_name
from minescan.scan.plan import ScanOptions, ScanPlan
from minescan.scan.scanner import HeatmapResult, ScanResult, Scanner

SOURCES_FOLDER = "sources"


class RunError(MinescanError):
    """A run that cannot start."""


@dataclass(frozen=True)
class RunSettings:
    """How a run writes its folder: where, in which result format, and the quicklooks' size (0: none)."""

    out_dir: Path
    result_format: str = "gpkg"
    quicklook_size: int = 1024
    verbose: bool = False  # tracebacks of unexpected faults, on stderr
    baseline: Path | None = None  # an earlier run's folder: the report says what changed since (minescan.report)
    ray: Any = None  # a minescan.scaleout.ray_run.RaySettings: the scenes are scanned by Ray actors; None: here


@dataclass(frozen=True)
class RunContext:
    """What every scene of a run shares."""

    scanner: Scanner
    model_digest: str
    options: ScanOptions
    settings: RunSettings
    journal: Journal
    progress: RunProgress | None  # None in a Ray run, which reports its workers' progress itself

    @property
    def out_dir(self) -> Path:
        return self.settings.out_dir


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


def _scan(ctx: RunContext, plan: ScanPlan) -> Outcome:
    """Scan one scene here and put its files in place (not yet marked done)."""
    bars = ctx.progress
    assert bars is not None
    bars.scene_started(plan.source.product_id, plan.tiles)
    done = 0

    def progress(tiles: int, _total: int) -> None:
        nonlocal done
        bars.tiles_done(tiles - done)
        done = tiles

    return write_outcome(ctx, plan, ctx.scanner.scan(plan, progress=progress))


def write_outcome(ctx: RunContext, plan: ScanPlan, result: ScanResult | HeatmapResult) -> Outcome:
    """Write a scene's result and quicklook into the run folder (each atomically) and say what they hold."""
    source = plan.source
    result = dataclasses.replace(result, scene=source.product_id)
    quicklook = ctx.out_dir / f"{source.product_id}.png"
    heatmap = plan.model.task == "classifier"
    size = ctx.settings.quicklook_size
    if size:  # a detector's shows its detections and the tiles a gate kept from it; a classifier's its heatmap
        result.write_quicklook(quicklook, max_size=size)
    else:
        quicklook.unlink(missing_ok=True)  # an earlier run's quicklook would show other detections
    suffix = "tif" if heatmap else ctx.settings.result_format  # a classifier's result is its heatmap (a COG)
    path = result.write(ctx.out_dir / f"{source.product_id}.{suffix}")
    warning = result.warning()
    if warning:
        print(f"minescan: warning: {warning}", file=sys.stderr, flush=True)
    classes = {} if heatmap else _classes(result.detections, result.labels)
    context = {} if heatmap else scene_context(result)
    return Outcome(str(path), str(quicklook) if size else None, result.tiles, result.skipped, classes, result.seconds,
                   result.input_shift, plan.shift_threshold, getattr(result, "gated", 0), **context)


def scene_context(result: ScanResult) -> dict[str, Any]:
    """The Outcome's context fields of a detector's result: date, clear share, masked tiles, flags, outside concessions."""
    a = result.assessment
    outside = None
    if a.inside is not None:
        labels = np.array(result.class_labels, dtype=object)
        outside = dict(Counter(labels[a.inside <= 0].tolist()))
    plan = result.plan
    return {"date": result.date, "clear_share": a.clear_share, "masked_tiles": a.masked_tiles,
            "masked_flagged": int(result.flagged.sum()), "outside": outside, "dataset": str(plan.source.dataset),
            "bands": list(plan.bands), "nodata": plan.nodata}


def failure(ctx: RunContext, exc: BaseException) -> str:
    """A scene's failure as one line (with the traceback on stderr for a bug, in verbose runs)."""
    if isinstance(exc, MinescanError):
        return str(exc)
    # Not a fault in the input but a bug; one scene must still not sink the night's run.
    if ctx.settings.verbose:
        traceback.print_exception(exc)
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


@dataclass(frozen=True)
class Prepared:
    """A scene planned, fingerprinted and marked started in the journal: ready to scan (here or on a worker)."""

    key: str
    plan: ScanPlan
    stamp: str
    attempts: int


def plan_input(ctx: RunContext, source: Source | MinescanError) -> ScanPlan | Exception:
    """One input's plan, or why it has none (the input did not resolve, or cannot be planned); touches no journal,
    so a Ray run's driver plans ahead on several threads."""
    if isinstance(source, MinescanError):
        return source
    try:
        return ctx.scanner.plan(source, **ctx.options.__dict__)
    except Exception as exc:  # a scene that cannot be planned (unreadable, bands out of range) fails on its own
        return exc


def prepare(ctx: RunContext, key: str, source: Source | MinescanError,
            planned: ScanPlan | Exception | None = None) -> SceneReport | Prepared:
    """Plan one input (unless ``planned`` by :func:`plan_input`) and mark it started; a report instead when it needs
    no scan (done in an earlier run) or cannot be scanned."""
    if isinstance(source, MinescanError):
        product_id = safe_name(Path(key.split(",")[0]).stem)
        ctx.journal.fail(key, product_id, "", str(source))
        return SceneReport(key, product_id, "failed", attempts=1, error=str(source))
    plan = plan_input(ctx, source) if planned is None else planned
    if isinstance(plan, Exception):
        reason = failure(ctx, plan)
        ctx.journal.fail(key, source.product_id, "", reason)
        return SceneReport(key, source.product_id, "failed", attempts=1, error=reason)
    stamp = fingerprint(ctx.model_digest, plan, ctx.settings.result_format)
    entry = ctx.journal.get(key)
    if entry and entry.state == DONE and entry.fingerprint == stamp and entry.outcome and Path(entry.outcome.result).is_file():
        return SceneReport(key, source.product_id, "done", resumed=True, attempts=entry.attempts, outcome=entry.outcome)
    ctx.journal.start(key, source.product_id, stamp)
    return Prepared(key, plan, stamp, (entry.attempts if entry else 0) + 1)


def fail(ctx: RunContext, scene: Prepared, reason: str) -> SceneReport:
    """Record a prepared scene as failed for ``reason``."""
    ctx.journal.fail(scene.key, scene.plan.source.product_id, scene.stamp, reason)
    return SceneReport(scene.key, scene.plan.source.product_id, "failed", attempts=scene.attempts, error=reason)


def finish(ctx: RunContext, scene: Prepared, write) -> SceneReport:
    """Run ``write()`` (which scans, or writes a result scanned elsewhere, and returns the Outcome), then mark the
    scene done; any failure but an interruption fails the scene alone."""
    try:
        outcome = write()
    except Exception as exc:  # KeyboardInterrupt is not an Exception: it stops the run, the row stays 'running'
        return fail(ctx, scene, failure(ctx, exc))
    ctx.journal.finish(scene.key, outcome)
    return SceneReport(scene.key, scene.plan.source.product_id, "done", attempts=scene.attempts, outcome=outcome)


def run_scene(ctx: RunContext, key: str, source: Source | MinescanError) -> SceneReport:
    """Bring one input to ``done`` or ``failed`` here (or skip it if an earlier run finished it)."""
    scene = prepare(ctx, key, source)
    if isinstance(scene, SceneReport):
        return scene
    return finish(ctx, scene, lambda: _scan(ctx, scene.plan))


def line(index: int, total: int, report: SceneReport) -> str:
    """The line a run prints when a scene ends."""
    head = f"[{index}/{total}] {report.product_id}:"
    if report.status == "failed":
        return f"{head} failed: {report.error}"
    o = report.outcome
    assert o is not None
    if report.resumed:
        return f"{head} done in an earlier run, skipped -> {o.result}"
    classes = ", ".join(f"{k} {v}" for k, v in sorted(o.detections.items()))
    flag = f", FLAGGED: input shift {o.input_shift:.2f} > {o.shift_threshold:g}, unreliable" if o.flagged else ""
    gated = f", {o.gated} gated off" if o.gated else ""
    masked = f", {o.masked_tiles} masked" if o.masked_tiles else ""
    clear = "" if o.clear_share is None else f", clear {o.clear_share:.0%}" + (
        f" ({o.masked_flagged} flagged as mostly masked)" if o.masked_flagged else "")
    return (f"{head} {o.tiles} tiles ({o.skipped} nodata{gated}{masked}), {sum(o.detections.values())} detections"
            f"{f' ({classes})' if classes else ''}{flag}{clear}, {o.seconds:.1f} s -> {o.result}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(ctx: RunContext, keys: list[str]) -> tuple[list[SceneReport], bool]:
    """Reports for every input in order (``pending`` past an interruption), and whether the run was interrupted."""
    sources = _resolve_all(keys, ctx.out_dir / SOURCES_FOLDER)
    if ctx.settings.ray is not None:
        from minescan.scaleout.ray_run import run_on_ray

        done, interrupted = run_on_ray(ctx, keys, sources, ctx.settings.ray)
    else:
        done, interrupted = _run_here(ctx, keys, sources)
    return [report if report is not None else
            SceneReport(key, s.product_id if isinstance(s, Source) else safe_name(Path(key).stem), "pending")
            for report, key, s in zip(done, keys, sources)], interrupted


def _run_here(ctx: RunContext, keys: list[str], sources: list[Source | MinescanError]) -> tuple[list[SceneReport | None], bool]:
    """Scan the inputs one after another in this process; None for those an interruption left."""
    done: list[SceneReport | None] = [None] * len(keys)
    bars = ctx.progress
    assert bars is not None
    try:
        for index, (key, source) in enumerate(zip(keys, sources)):
            done[index] = report = run_scene(ctx, key, source)
            bars.scene_finished(line(index + 1, len(keys), report))
    except KeyboardInterrupt:
        return done, True
    finally:
        bars.close()
    return done, False


def execute(keys: list[str], scanner: Scanner, options: ScanOptions, settings: RunSettings) -> RunSummary:
    """Scan ``keys`` (inputs as :func:`~minescan.raster.sources.resolve.absolute_input` spells them) into a run
    folder and write its summary; the summary says how each scene ended (``interrupted`` when the run was stopped)."""
    if not keys:
        raise RunError("no scenes given")
    if scanner.model_path is None:
        raise RunError("a run needs the model as a file (its hash is part of each scene's fingerprint)")
    out_dir = settings.out_dir
    lock = lock_run_folder(out_dir)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Journal(out_dir) as journal:
            digest = file_digest(scanner.model_path)
            if getattr(scanner, "gate_path", None):  # a gated run's results depend on the gate's weights too
                digest += "+gate:" + file_digest(scanner.gate_path)
            progress = RunProgress(len(keys)) if settings.ray is None else None
            ctx = RunContext(scanner, digest, options, settings, journal, progress)
            reports, interrupted = _run(ctx, keys)
        summary = RunSummary(tuple(reports), str(scanner.model_path), str(out_dir), interrupted)
        write_summary(out_dir, summary)
        write_run_report(summary, settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
        lock.close()
    return summary


def write_run_report(summary: RunSummary, settings: RunSettings) -> None:
    """The run's report (:mod:`minescan.report.morning`): what changed since the baseline, alerts first, with chips.
    A report that cannot be written is said on stderr; the run's results and summary stand."""
    from minescan.defaults import DEFAULTS
    from minescan.report.baseline import read_baseline
    from minescan.report.morning import write_report

    try:
        baseline = read_baseline(settings.baseline) if settings.baseline is not None else None
        report = write_report(settings.out_dir, summary, baseline, quicklook_size=settings.quicklook_size,
                              chips=DEFAULTS.report_chips)
    except MinescanError as exc:
        print(f"minescan: warning: no report: {exc}", file=sys.stderr, flush=True)
        return
    if report is not None and settings.baseline is not None:
        counts = ", ".join(f"{report.counts.get(k, 0)} {k}" for k in ("new", "grown", "shrunk", "unknown", "gone", "unchanged"))
        print(f"since the baseline: {counts}; {report.alerts} new site(s) outside every concession; report: {report.html}",
              flush=True)
    elif report is not None:
        print(f"report: {report.html}", flush=True)


def run_many(keys: list[str], scanner: Scanner, options: ScanOptions, settings: RunSettings) -> int:
    """:func:`execute`, then the run's last lines; returns the exit code (see the module docstring) and raises
    KeyboardInterrupt after writing the summary when the run was interrupted."""
    summary = execute(keys, scanner, options, settings)
    markdown = settings.out_dir / SUMMARY_MARKDOWN
    flagged = f", {summary.flagged} FLAGGED as unreliable (input unlike the model's training input)" if summary.flagged else ""
    print(f"{summary.count('done')}/{len(keys)} scenes done, {summary.count('failed')} failed, {summary.count('pending')} pending"
          f"{flagged}; "
          f"{summary.tiles} tiles{f' ({summary.gated} gated off)' if summary.gated else ''}, "
          f"{sum(summary.detections.values())} detections; summary: {markdown}")
    if summary.interrupted:
        raise KeyboardInterrupt
    failed = [s for s in summary.scenes if s.status == "failed"]
    if failed:
        names = ", ".join(s.product_id for s in failed[:5]) + (", ..." if len(failed) > 5 else "")
        print(f"minescan: error: {len(failed)} of {len(keys)} scenes failed ({names}); reasons in {markdown}", file=sys.stderr)
        return 1
    return 0
