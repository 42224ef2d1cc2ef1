"""The worker of a Ray run: an actor holding one loaded model that scans whole scenes or parts of them.

The driver (:mod:`minescan.scaleout.ray_run`) plans each scene once and sends
a :class:`Job`: the plan, and for a detector the tile rows to scan
(:class:`~minescan.scan.split.RowSpan`; all of them for a whole scene).  The
worker scans it with its own :class:`~minescan.scan.scanner.Scanner` and
returns what is small: a :class:`~minescan.scan.split.PartResult` (each
tile's detections, unstitched) or a classifier's
:class:`~minescan.scan.scanner.HeatmapResult`.  It writes nothing the driver
reads: results travel back through Ray, so the nodes share no filesystem for
outputs.  Inputs must be readable by every node (shared storage, GDAL's
``/vsis3/``, ``/vsicurl/``).

A plan whose scene is a VRT minescan wrote on the driver (a ``.SAFE``, band
files, a STAC item) carries the VRT's text (:func:`portable`): its sources
are absolute paths or URLs, so the worker writes it again in a folder of its
own and reads the same pixels without the driver's run folder.

The actor runs two calls at a time (``max_concurrency=2``): the scan, and
:meth:`SceneWorker.progress`, which the driver polls for tiles done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minescan.errors import MinescanError
from minescan.scan.plan import ScanPlan
from minescan.scan.split import RowSpan


@dataclass(frozen=True)
class WorkerSpec:
    """How each worker loads its model: what a :class:`~minescan.scan.scanner.Scanner` takes."""

    model: str
    backend: str = "auto"
    threads: int | None = None
    workers: int | None = None
    gate: str | None = None
    max_memory: int | None = None
    # The model's (and gate's) files as Ray object references, so nodes need no shared filesystem for them:
    # role ("model", "gate") -> ((file name, reference), ...); the model first, then its sidecar, if any.
    shipped: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """A model file and the sidecar that travels with it (a TensorRT engine's ``<engine>.json``)."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    return [path] + ([sidecar] if sidecar.is_file() else [])


@dataclass(frozen=True)
class Job:
    """One scene, or tile rows ``span`` of it, to scan; ``vrt`` is the text of the plan's VRT (see :func:`portable`)."""

    job_id: int
    key: str
    plan: ScanPlan
    span: RowSpan | None  # None: the whole scene as one result (a classifier's heatmap)
    vrt: str | None = None

    def label(self) -> str:
        name = self.plan.source.product_id
        whole = self.span is None or (self.span.start == 0 and self.span.stop == self.plan.grid_shape[0])
        return name if whole else f"{name} [{self.span.describe()}]"

    @property
    def tiles(self) -> int:
        return self.plan.tiles if self.span is None else len(self.span) * self.plan.grid_shape[1]


def portable(plan: ScanPlan) -> str | None:
    """The text of the VRT minescan wrote for ``plan``'s scene (None when the scene is the input itself)."""
    dataset = plan.source.dataset
    if plan.source.kind in ("raster", "array") or not str(dataset).lower().endswith(".vrt"):
        return None
    path = Path(dataset)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def land(job: Job, folder: Path) -> ScanPlan:
    """``job``'s plan reading a copy of its VRT in ``folder`` (the plan as sent when it carries none)."""
    if job.vrt is None:
        return job.plan
    digest = hashlib.sha256(job.vrt.encode()).hexdigest()[:12]
    path = folder / f"{job.plan.source.product_id}-{digest}.vrt"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(job.vrt, encoding="utf-8")
        tmp.replace(path)
    return dataclasses.replace(job.plan, source=dataclasses.replace(job.plan.source, dataset=path))


class SceneWorker:
    """A Ray actor's body (the driver wraps it with ``ray.remote``): one model, scans on request."""

    def __init__(self, spec: WorkerSpec) -> None:
        from minescan.scan.scanner import Scanner

        self.spec = spec
        self._lock = threading.Lock()
        self._done: dict[int, int] = {}
        self._folder = Path(tempfile.mkdtemp(prefix="minescan-worker-"))
        # A model that does not load here is reported by describe() in its own words: raised from __init__, it
        # would reach the driver as Ray's "actor died" with a traceback, like a lost process.
        self.error: str | None = None
        try:
            local = self._unpack(spec.shipped)
            self.scanner = Scanner(local.get("model", spec.model), backend=spec.backend, threads=spec.threads,
                                   workers=spec.workers, gate=local.get("gate", spec.gate), max_memory=spec.max_memory)
        except MinescanError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any other load failure, in one line
            self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"

    def _unpack(self, shipped: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]) -> dict[str, Path]:
        """Write the shipped model files into this worker's folder; role -> the model file's local path."""
        import ray

        local: dict[str, Path] = {}
        for role, files in shipped:
            folder = self._folder / role
            folder.mkdir()
            for index, (name, ref) in enumerate(files):
                (folder / name).write_bytes(ray.get(ref))
                if index == 0:
                    local[role] = folder / name
        return local

    def describe(self) -> dict[str, Any]:
        """Where this worker runs and how its model runs there (for the driver's log); ``error``: why the model
        did not load here (None when it did)."""
        where = {"host": socket.gethostname(), "pid": os.getpid(), "error": self.error}
        if self.error is not None:
            return where
        return where | {"backend": self.scanner.backend, "split": self.scanner.model.describe_split(why=False),
                        "notice": self.scanner.notice}

    def progress(self) -> dict[int, int]:
        """Tiles done so far per job under way."""
        with self._lock:
            return dict(self._done)

    def run(self, job: Job) -> Any:
        """Scan ``job``: a :class:`~minescan.scan.split.PartResult` for a detector, a heatmap for a classifier."""
        plan = land(job, self._folder)
        with self._lock:
            self._done[job.job_id] = 0

        def progress(done: int, _total: int) -> None:
            with self._lock:
                self._done[job.job_id] = done

        try:
            if job.span is None:
                result = self.scanner.scan(plan, progress=progress)
                return dataclasses.replace(result, plan=job.plan)  # the driver's plan: its own VRT
            part = self.scanner.scan_part(plan, job.span, progress=progress)
            return part
        finally:
            with self._lock:
                self._done.pop(job.job_id, None)
