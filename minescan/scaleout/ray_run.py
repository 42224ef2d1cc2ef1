"""A run's scenes scanned by Ray actors, with the journal, the results and the progress on the driver.

The driver is the process that runs ``minescan scan ... --out-dir R --ray``
(or :meth:`minescan.Scanner.scan_many` with ``ray=``).  It does what a local
run does (:mod:`minescan.runs.batch`): resolves every input, plans each
scene once (bands, radiometry, the domain-shift guard, the fingerprint),
skips scenes an earlier run finished, and writes each scene's result and
quicklook once, atomically, into the run folder, marking it done in the
journal.  Only the scanning moves: :class:`~minescan.scaleout.worker.SceneWorker`
actors, each holding one loaded model, scan whole scenes or bands of tile
rows of a large one and send back each tile's detections (small: no
shared filesystem is needed for outputs; the model's files travel through
Ray's object store).  A split scene is stitched on the driver exactly as a
single-process scan stitches it (:mod:`minescan.scan.split`).

Faults:

* a worker process that dies (killed, out of memory, its node lost) fails
  its job with ``RayActorError``: the actor is replaced and the job (the
  scene, or just its part) runs again on an actor, up to
  ``max_retries`` times, then the scene is reported failed with the reason;
* a scene that fails by itself (a corrupt file, an unreadable band) fails
  alone, with its error, as in a local run;
* the driver killed: the journal's rows of unfinished scenes stay
  ``running``; the same command resumes, scanning only what was not done
  (a done scene's fingerprint and result file are checked, as locally).

Placement: ``workers`` actors, spread over the nodes (Ray's ``SPREAD``
strategy).  With ``gpus_per_worker`` each takes that share of a GPU and the
model runs on the best backend its node offers; otherwise each takes
``cpus_per_worker`` CPUs (default: the cluster's CPUs shared evenly, at
most one node's) and its ONNX Runtime threads and reader threads fill just
those (``MINESCAN_CORES``, :func:`minescan.defaults.available_cores`), so
two actors on one node do not fight over its cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

from minescan.defaults import CORES_VARIABLE, DEFAULTS
from minescan.errors import MinescanError
from minescan.raster.sources.source import Source
from minescan.runs.batch import Prepared, RunContext, fail, failure, finish, line, plan_input, prepare, write_outcome
from minescan.runs.report import SceneReport
from minescan.scaleout.worker import Job, SceneWorker, WorkerSpec, model_files, portable
from minescan.scan.split import PartResult, RowSpan, rows_per_part, split_rows, stitch_parts


# Threads planning the next scenes on the driver, while the workers scan (each plan reads a sample of the scene).
PLANNER_THREADS = 4


class RayRunError(MinescanError):
    """A Ray run that cannot start: Ray missing, a cluster out of reach, settings that cannot be placed."""


@dataclass(frozen=True)
class RaySettings:
    """Where and how a run's scenes are scanned on Ray.

    ``address``: None follows Ray's own rule (``RAY_ADDRESS``, else a cluster
    ``ray start`` runs on this machine, else a local instance started for
    the run and stopped after it); ``"auto"``, ``"HOST:6379"`` or
    ``"ray://HOST:10001"`` join that cluster.  In a program that has already
    called ``ray.init``, that connection is used as it is.  ``workers``: actors
    (default: one per GPU share with ``gpus_per_worker``, else one per node).
    ``split_rows``: tile rows per part of a split scene (None: split only
    scenes of more than :attr:`~minescan.defaults.Defaults.ray_split_tiles`
    tiles, into parts of at most that many; 0: never split).
    ``runtime_env``: Ray's runtime environment for the workers (``pip``,
    ``env_vars``, ``working_dir``...), as ``ray.init`` takes it.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: int | None = None
    split_rows: int | None = None
    max_retries: int = DEFAULTS.ray_max_retries
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, value, low in (("workers", self.workers, 1), ("cpus_per_worker", self.cpus_per_worker, 1),
                                 ("split_rows", self.split_rows, 0), ("max_retries", self.max_retries, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise RayRunError(f"{name} {value!r} is out of range: must be a whole number of at least {low}")
        if not (isinstance(self.gpus_per_worker, (int, float)) and 0 <= self.gpus_per_worker):
            raise RayRunError(f"gpus_per_worker {self.gpus_per_worker!r} is out of range: must be 0 or more")


def import_ray():
    """The ``ray`` module, or a :class:`RayRunError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayRunError("running on Ray needs the ray package: pip install 'minescan[ray]'") from None
    return ray


def connect(settings: RaySettings) -> bool:
    """Start a local Ray instance or join the cluster at ``settings.address``; True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if settings.address not in (None, "auto"):
        reachable(settings.address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if settings.runtime_env:
        kwargs["runtime_env"] = dict(settings.runtime_env)
    if settings.address is None:
        kwargs.update(include_dashboard=False)
    try:
        ray.init(address=settings.address, **kwargs)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError, TimeoutError: all mean "no cluster there"
        where = f"the Ray cluster at {settings.address!r}" if settings.address else "a local Ray instance"
        raise RayRunError(f"cannot reach {where}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    return True


def reachable(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`RayRunError` unless something answers TCP at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)
    within ``timeout`` seconds: Ray itself retries an unanswered address for minutes before it gives up."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = where.port
    except ValueError:
        port = None
    if not where.hostname or port is None:
        raise RayRunError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((where.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise RayRunError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Placement:
    """How many actors, and what each asks Ray for."""

    workers: int
    cpus: int
    gpus: float

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.workers} Ray worker(s) x {self.cpus} CPU{gpus}"


def placement(settings: RaySettings, nodes: list[Mapping[str, float]]) -> Placement:
    """The actors for ``settings`` on a cluster whose alive nodes offer ``nodes`` (Ray resources per node)."""
    cpus = [int(n.get("CPU", 0)) for n in nodes] or [1]
    gpus = sum(n.get("GPU", 0) for n in nodes)
    if settings.gpus_per_worker:
        if gpus < settings.gpus_per_worker:
            raise RayRunError(f"gpus_per_worker {settings.gpus_per_worker:g}: the cluster has {gpus:g} GPU(s)")
        workers = settings.workers or max(1, int(gpus // settings.gpus_per_worker))
    else:
        workers = settings.workers or len(nodes) or 1
    per = settings.cpus_per_worker or max(1, min(max(cpus), sum(cpus) // workers))
    if per > max(cpus):
        raise RayRunError(f"cpus_per_worker {per}: no node has that many CPUs (the largest has {max(cpus)})")
    return Placement(workers, per, float(settings.gpus_per_worker))


def parts_of(plan: Any, split_rows_: int | None) -> list[RowSpan] | None:
    """The tile-row parts a Ray run scans ``plan``'s scene in (one part: whole); None for a classifier's heatmap,
    which is scanned whole.  ``split_rows_``: rows per part; None: :attr:`~minescan.defaults.Defaults.ray_split_tiles`
    tiles at most per part; 0: never split."""
    if plan.model.task != "detector":
        return None
    per = rows_per_part(plan.grid_shape, DEFAULTS.ray_split_tiles) if split_rows_ is None else split_rows_
    return split_rows(plan.grid_shape[0], per or plan.grid_shape[0])


def describe_parts(plan: Any, split_rows_: int | None) -> str:
    """How a Ray run scans the scene, in words (``minescan scan --ray --dry-run``)."""
    spans = parts_of(plan, split_rows_)
    if spans is None:
        return "whole, on one worker (a classifier's heatmap is not split)"
    if len(spans) == 1:
        return f"whole, on one worker ({plan.tiles} tiles)"
    return (f"split into {len(spans)} parts of up to {len(spans[0])} tile rows ({len(spans[0]) * plan.grid_shape[1]} "
            f"tiles), scanned by different workers and stitched on the driver")


@dataclass
class _Scene:
    """A prepared scene on its way: its parts and what came back."""

    prepared: Prepared
    parts: int
    results: list[Any] = field(default_factory=list)
    retried: int = 0
    failed: bool = False


@dataclass
class _Slot:
    """One actor, its name in the log, and the job it holds (None: idle)."""

    index: int
    actor: Any = None  # None: none is running or starting in this slot (given up)
    name: str = ""
    starting: Any = None  # while the actor loads its model: the reference its describe() answers on
    since: float = 0.0  # when the current actor was asked to start
    failed_starts: int = 0  # actors in a row that died before their model had loaded
    job: Job | None = None
    ref: Any = None
    tries: int = 0  # tries of the current job so far

    @property
    def ready(self) -> bool:
        return self.actor is not None and self.starting is None


class RayRun:
    """One run's scenes on Ray (see the module docstring); :meth:`run` returns the reports in input order."""

    def __init__(self, ctx: RunContext, settings: RaySettings, spec: WorkerSpec) -> None:
        self.ctx, self.settings, self.spec = ctx, settings, spec
        self.ray = import_ray()
        self.place = placement(settings, [n["Resources"] for n in self.ray.nodes() if n.get("Alive")])
        self._ids = itertools.count()
        self.jobs: deque[tuple[Job, int]] = deque()  # (job, tries so far): retries go first
        self.scenes: dict[str, _Scene] = {}
        self.slots: list[_Slot] = []

    # -- actors: started without waiting, so that an actor Ray cannot place yet (its node gone, no room left)
    # never holds up the others; the loop takes each into service when its model has loaded.
    def _actor_class(self):
        options: dict[str, Any] = {"num_cpus": self.place.cpus, "max_concurrency": 2, "scheduling_strategy": "SPREAD",
                                   "runtime_env": {"env_vars": {CORES_VARIABLE: str(self.place.cpus)}}}
        if self.place.gpus:
            options["num_gpus"] = self.place.gpus
        return self.ray.remote(SceneWorker).options(**options)

    def _launch(self, slot: _Slot) -> None:
        """Start an actor in ``slot``; it loads its model while the run goes on."""
        slot.actor = self._actor_class().remote(self.spec)
        slot.starting, slot.since = slot.actor.describe.remote(), time.monotonic()

    def _started(self, slot: _Slot) -> None:
        """The actor in ``slot`` has answered (or died) while starting."""
        ref, slot.starting = slot.starting, None
        try:
            facts = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # its process died while loading: start another
            slot.failed_starts += 1
            self._relaunch(slot, _first(exc))
            return
        slot.failed_starts = 0
        if facts["error"] is not None:  # the model does not load there: nothing would scan, stop the run
            raise RayRunError(f"worker {slot.index + 1} on {facts['host']} cannot load the model: {facts['error']}")
        slot.name = f"worker {slot.index + 1} ({facts['host']}:{facts['pid']})"
        self.progress.note(f"{slot.name}: {facts['backend']}, {facts['split']}")

    def _relaunch(self, slot: _Slot, why: str) -> None:
        """A fresh actor in a dead one's place; a slot whose actors die while starting more than ``max_retries``
        times in a row is given up and the run goes on without it.  (A job that kills its worker is bounded by
        its own tries, so one bad scene does not use up the workers.)"""
        self.ray.kill(slot.actor)
        if slot.failed_starts > self.settings.max_retries:
            slot.actor = None
            self.progress.note(f"worker {slot.index + 1}: given up after {slot.failed_starts} failed start(s) ({why})")
            return
        self._launch(slot)

    def _check_workers(self, work_left: bool) -> None:
        """Raise when work is left and no worker is in service or can still come: every slot given up, or none has
        come up within ``DEFAULTS.ray_start_timeout_s`` (Ray cannot place them: resources it does not have)."""
        if not work_left or any(s.ready for s in self.slots):
            return
        starting = [s for s in self.slots if s.starting is not None]
        if not starting:
            raise RayRunError("every worker died and none could be started again")
        waited = time.monotonic() - min(s.since for s in starting)
        if waited > DEFAULTS.ray_start_timeout_s:
            raise RayRunError(f"no worker started within {waited:.0f} s: the cluster has no room for "
                              f"{self.place.describe()} (ray status shows what it has)")

    # -- jobs
    def _jobs_of(self, scene: Prepared) -> list[Job]:
        plan, vrt = scene.plan, portable(scene.plan)
        spans = parts_of(plan, self.settings.split_rows)
        if spans is None:
            return [Job(next(self._ids), scene.key, plan, None, vrt)]
        return [Job(next(self._ids), scene.key, plan, span, vrt) for span in spans]

    def _plan_ahead(self, inputs: deque) -> None:
        """Keep the next inputs being planned on the planner threads (planning a full .SAFE takes ~0.85 s of the
        driver's time: one at a time, it would starve more than a worker or two)."""
        while inputs and len(self._planning) < self._lookahead:
            index, key, source = inputs.popleft()
            self._planning.append((index, key, source, self._planner.submit(plan_input, self.ctx, source)))

    def _next_job(self, inputs: deque) -> tuple[Job, int] | None:
        """The next job: a retry or a part already cut, else the parts of the next input that needs a scan."""
        while not self.jobs and (inputs or self._planning):
            self._plan_ahead(inputs)
            index, key, source, planned = self._planning.popleft()
            prepared = prepare(self.ctx, key, source, planned.result())
            self._plan_ahead(inputs)
            if isinstance(prepared, SceneReport):
                self._report(index, prepared)
                continue
            jobs = self._jobs_of(prepared)
            self.scenes[key] = _Scene(prepared, len(jobs))
            self._index[key] = index
            self.jobs.extend((job, 0) for job in jobs)
        return self.jobs.popleft() if self.jobs else None

    def _hand_out(self, inputs: deque) -> None:
        for slot in self.slots:
            if slot.job is None and slot.ready:
                nxt = self._next_job(inputs)
                if nxt is None:
                    return
                self._submit(slot, *nxt)

    def _submit(self, slot: _Slot, job: Job, tries: int) -> None:
        slot.job, slot.tries, slot.ref = job, tries, slot.actor.run.remote(job)
        self.progress.started(slot.index, slot.name, job.label(), job.tiles)

    # -- outcomes
    def _report(self, index: int, report: SceneReport) -> None:
        self.reports[index] = report
        self.progress.scene_finished(line(index + 1, self.total, report))

    def _returned(self, slot: _Slot, ref: Any) -> tuple[str, Any] | None:
        """Take the slot's finished job; (key, result) when its scene is now complete, else None."""
        job, tries = slot.job, slot.tries
        assert job is not None
        slot.job = slot.ref = None
        self.progress.finished(slot.index)
        scene = self.scenes.get(job.key)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # the process died: replace it, run the job again
            self._relaunch(slot, _first(exc))
            if scene is None or scene.failed:
                return None
            scene.retried += 1
            if tries + 1 > self.settings.max_retries:
                self._fail(scene, f"its worker died {tries + 1} time(s), the last on {slot.name}: "
                                  f"{_first(exc)}")
            else:
                self.progress.note(f"{job.label()}: its worker died ({_first(exc)}); retrying on another worker")
                self.jobs.appendleft((job, tries + 1))
            return None
        except self.ray.exceptions.RayTaskError as exc:  # the scan raised: the scene fails alone
            if scene is not None and not scene.failed:
                self._fail(scene, failure(self.ctx, exc.cause if exc.cause is not None else exc))
            return None
        if scene is None or scene.failed:
            return None
        scene.results.append(result)
        if len(scene.results) < scene.parts:
            return None
        return job.key, result

    def _fail(self, scene: _Scene, reason: str) -> None:
        scene.failed = True
        self.jobs = deque((j, t) for j, t in self.jobs if j.key != scene.prepared.key)
        self._report(self._index[scene.prepared.key], fail(self.ctx, scene.prepared, reason))

    def _complete(self, key: str) -> None:
        """Stitch (a detector's parts) and write a finished scene on the driver, then mark it done."""
        scene = self.scenes.pop(key)
        plan = scene.prepared.plan

        def write():
            results = scene.results
            result = stitch_parts(plan, results) if isinstance(results[0], PartResult) else results[0]
            return write_outcome(self.ctx, plan, result)

        report = finish(self.ctx, scene.prepared, write)
        if scene.retried:
            report = dataclasses.replace(report, retried=scene.retried)
        self._report(self._index[key], report)

    def _poll(self) -> None:
        """Ask the busy workers for their tiles done (a dead one answers nothing: it is handled when its job returns)."""
        busy = [s for s in self.slots if s.job is not None]
        refs = [s.actor.progress.remote() for s in busy]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=DEFAULTS.ray_poll_s)
        for slot, ref in zip(busy, refs):
            if ref in ready and slot.job is not None:
                try:
                    done = self.ray.get(ref).get(slot.job.job_id)
                except Exception:  # noqa: BLE001 - the worker died; its job's own reference says so
                    continue
                if done is not None:
                    self.progress.update(slot.index, done)

    def run(self, keys: list[str], sources: list[Source | MinescanError]) -> tuple[list[SceneReport | None], bool]:
        """Reports in input order (None: not reached, past an interruption), and whether the run was interrupted."""
        from minescan.runs.progress import WorkerProgress

        self.progress = WorkerProgress(self.place.workers, scenes=len(keys))
        self.total = len(keys)
        self.reports: list[SceneReport | None] = [None] * len(keys)
        self._index: dict[str, int] = {}
        inputs = deque((i, k, s) for i, (k, s) in enumerate(zip(keys, sources)))
        self._planning: deque = deque()  # (index, key, source, future plan), in input order
        self._lookahead = 2 * self.place.workers + 1
        self._planner = ThreadPoolExecutor(PLANNER_THREADS, thread_name_prefix="minescan-plan")
        try:
            self.progress.note(f"Ray: {self.place.describe()}")
            self.slots = [_Slot(i) for i in range(self.place.workers)]
            for slot in self.slots:  # they load their models side by side
                self._launch(slot)
            last_poll = time.monotonic()
            while True:
                self._hand_out(inputs)
                work_left = bool(self.jobs or inputs or self._planning)
                busy = {s.ref: s for s in self.slots if s.job is not None}
                starting = {s.starting: s for s in self.slots if s.starting is not None}
                if not busy and not work_left:
                    break
                self._check_workers(work_left)
                ready, _ = self.ray.wait(list(busy) + list(starting), num_returns=1, timeout=DEFAULTS.ray_poll_s)
                complete = []
                for ref in ready:
                    if ref in starting:
                        self._started(starting[ref])
                        continue
                    finished = self._returned(busy[ref], ref)
                    if finished is not None:
                        complete.append(finished[0])
                self._hand_out(inputs)  # before writing, so the workers do not wait for the driver's writes
                for key in complete:
                    self._complete(key)
                if time.monotonic() - last_poll >= DEFAULTS.ray_poll_s:
                    self._poll()
                    last_poll = time.monotonic()
        except KeyboardInterrupt:
            return self.reports, True
        finally:
            for _, _, _, future in self._planning:
                future.cancel()
            self._planner.shutdown(wait=True)
            for slot in self.slots:
                if slot.actor is not None:
                    self.ray.kill(slot.actor)
            self.progress.close()
        return self.reports, False


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def worker_spec(scanner: Any) -> WorkerSpec:
    """What each worker needs to load ``scanner``'s model (and gate) the way it was loaded here, files shipped."""
    ray = import_ray()
    shipped = []
    for role, path in (("model", scanner.model_path), ("gate", getattr(scanner, "gate_path", None))):
        if path is not None:
            shipped.append((role, tuple((f.name, ray.put(f.read_bytes())) for f in model_files(path))))
    loading = scanner.loading
    return WorkerSpec(str(scanner.model_path), backend=loading["backend"], threads=loading["threads"],
                      workers=loading["workers"], gate=str(scanner.gate_path) if scanner.gate_path else None,
                      max_memory=loading["max_memory"], shipped=tuple(shipped))


def run_on_ray(ctx: RunContext, keys: list[str], sources: list[Source | MinescanError],
               settings: RaySettings) -> tuple[list[SceneReport | None], bool]:
    """Scan a run's resolved inputs on Ray (see the module docstring)."""
    ray = import_ray()
    started = connect(settings)
    try:
        spec = worker_spec(ctx.scanner)
        return RayRun(ctx, settings, spec).run(keys, sources)
    finally:
        if started:
            ray.shutdown()


__all__ = ["RayRunError", "RaySettings", "placement", "run_on_ray"]
