"""Scene jobs: whole scenes scanned in the background, kept in SQLite so they survive a restart.

A job moves ``queued -> running -> done | failed | cancelled``.  The store
(``STATE/jobs.sqlite``) holds every job with its request, progress (tiles done
and total), timings, error, the domain-shift guard's verdict and its result
files (``STATE/results/ID.gpkg`` and ``.geojson``, written atomically by the
scan's own writers before the job is marked done).

Restart rules: a job found ``running`` when the server starts was interrupted
(killed, power loss): it is queued again if that was its first attempt, and
failed with a reason otherwise, so a scene that kills the server cannot do so
forever; every job runs to an end state exactly once.  On a graceful shutdown
(SIGTERM) a running job is cancelled and put back in the queue without
counting the attempt.  ``max_queue`` bounds the queued jobs: one more is
refused (:class:`QueueFull`, HTTP 429).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from minescan.errors import MinescanError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    scene TEXT NOT NULL,
    source TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    tiles_done INTEGER NOT NULL DEFAULT 0,
    tiles_total INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    seconds REAL,
    error TEXT,
    detections INTEGER,
    input_shift REAL,
    reliable INTEGER
)
"""


class QueueFull(MinescanError):
    """Too many jobs are queued."""


class JobError(MinescanError):
    """A job that cannot be found or changed."""


@dataclass(frozen=True)
class Job:
    """A job as the store holds it (``scene``: what the client named; ``source``: the resolved path scanned)."""

    id: str
    model: str
    scene: str
    source: str
    options: Mapping[str, Any]
    state: str
    attempts: int
    runs: int
    tiles_done: int
    tiles_total: int | None
    created: float
    started: float | None
    finished: float | None
    seconds: float | None
    error: str | None
    detections: int | None
    input_shift: float | None
    reliable: bool | None

    def to_json(self) -> dict[str, Any]:
        """The job for a client: no server paths."""
        return {
            "id": self.id, "model": self.model, "scene": self.scene, "options": dict(self.options), "state": self.state,
            "attempts": self.attempts, "tiles": {"done": self.tiles_done, "total": self.tiles_total},
            "created": self.created, "started": self.started, "finished": self.finished, "seconds": self.seconds,
            "error": self.error, "detections": self.detections, "input_shift": self.input_shift, "reliable": self.reliable,
        }


class JobStore:
    """The jobs table; every method is thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def _rows(self, sql: str, params: tuple = ()) -> list[Job]:
        with self._lock:
            cursor = self._db.execute(f"SELECT id, model, scene, source, options, state, attempts, runs, tiles_done, "
                                      f"tiles_total, created, started, finished, seconds, error, detections, input_shift, "
                                      f"reliable FROM jobs {sql}", params)
            rows = cursor.fetchall()
        return [Job(*r[:4], json.loads(r[4]), *r[5:17], None if r[17] is None else bool(r[17])) for r in rows]

    def _write(self, sql: str, params: tuple) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def get(self, job_id: str) -> Job:
        rows = self._rows("WHERE id = ?", (job_id,))
        if not rows:
            raise JobError(f"no job {job_id[:64]!r}")
        return rows[0]

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def add(self, model: str, scene: str, source: str, options: Mapping[str, Any], max_queue: int) -> Job:
        job_id = uuid.uuid4().hex
        with self._lock:
            queued = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()[0]
            if queued >= max_queue:
                raise QueueFull(f"{queued} scene jobs are queued (the limit); retry later")
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute("INSERT INTO jobs (id, seq, model, scene, source, options, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (job_id, seq, model, scene, source, json.dumps(dict(options)), QUEUED, time.time()))
        return self.get(job_id)

    def claim(self) -> Job | None:
        """The oldest queued job, now running (attempt counted), or None."""
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, runs = runs + 1, started = ?, "
                             "tiles_done = 0, error = NULL WHERE id = ?", (RUNNING, time.time(), row[0]))
        return self.get(row[0])

    def progress(self, job_id: str, done: int, total: int) -> None:
        self._write("UPDATE jobs SET tiles_done = ?, tiles_total = ? WHERE id = ?", (done, total, job_id))

    def finish(self, job_id: str, state: str, **values: Any) -> None:
        columns = {"finished": time.time(), **values}
        sets = ", ".join(f"{k} = ?" for k in columns)
        self._write(f"UPDATE jobs SET state = ?, {sets} WHERE id = ?", (state, *columns.values(), job_id))

    def requeue(self, job_id: str) -> None:
        """Back to the queue without counting the attempt (a graceful shutdown interrupted it)."""
        self._write("UPDATE jobs SET state = ?, attempts = attempts - 1, started = NULL WHERE id = ? AND state = ?",
                    (QUEUED, job_id, RUNNING))

    def cancel_queued(self, job_id: str) -> bool:
        return self._write("UPDATE jobs SET state = ?, finished = ? WHERE id = ? AND state = ?",
                           (CANCELLED, time.time(), job_id, QUEUED)) == 1

    def recover(self) -> tuple[int, int]:
        """After a start: interrupted jobs queued again once, or failed; returns (requeued, failed)."""
        with self._lock:
            again = self._db.execute("UPDATE jobs SET state = ?, started = NULL WHERE state = ? AND attempts < 2",
                                     (QUEUED, RUNNING)).rowcount
            failed = self._db.execute("UPDATE jobs SET state = ?, finished = ?, error = ? WHERE state = ?",
                                      (FAILED, time.time(), "interrupted twice: the server stopped while it ran", RUNNING)).rowcount
        return again, failed

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobRunner:
    """Runs queued jobs on ``workers`` threads with the loaded scanners; ``results`` holds their files."""

    def __init__(self, store: JobStore, scan: Callable[..., Any], results: Path, *, workers: int = 1,
                 on_tiles: Callable[[int], None] | None = None) -> None:
        self.store, self._scan, self.results = store, scan, results
        self.results.mkdir(parents=True, exist_ok=True)
        self._wake = threading.Condition()
        self._stopping = False
        self._running: dict[str, threading.Event] = {}
        self._cancelled: set[str] = set()
        self._on_tiles = on_tiles
        self._threads = [threading.Thread(target=self._loop, name=f"minescan-job-{i}", daemon=True) for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.state == QUEUED and self.store.cancel_queued(job_id):
            return self.store.get(job_id)
        event = self._running.get(job_id)
        if event is not None:
            self._cancelled.add(job_id)
            event.set()
        return self.store.get(job_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: no new job starts; running ones are cancelled and queued again."""
        self._stopping = True
        for event in list(self._running.values()):
            event.set()
        self.notify()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def result_path(self, job_id: str, suffix: str) -> Path:
        return self.results / f"{job_id}{suffix}"

    def _loop(self) -> None:
        while not self._stopping:
            job = self.store.claim()
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        from minescan.scan.stream import ScanCancelled

        cancel = threading.Event()
        self._running[job.id] = cancel
        last = [0.0, 0]

        def progress(done: int, total: int) -> None:
            if self._on_tiles:
                self._on_tiles(done - last[1])
            last[1] = done
            now = time.monotonic()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                self.store.progress(job.id, done, total)

        started = time.perf_counter()
        try:
            result = self._scan(job, progress=progress, cancel=cancel)
            for suffix in (".gpkg", ".geojson"):
                result.write(self.result_path(job.id, suffix))
            self.store.finish(job.id, DONE, seconds=time.perf_counter() - started, detections=len(result.detections),
                              input_shift=result.input_shift, reliable=int(result.reliable), tiles_done=result.tiles,
                              tiles_total=result.tiles)
        except ScanCancelled:
            if job.id in self._cancelled:
                self.store.finish(job.id, CANCELLED, seconds=time.perf_counter() - started)
            else:  # the server is stopping: run it again after the restart
                self.store.requeue(job.id)
        except MinescanError as exc:
            self.store.finish(job.id, FAILED, seconds=time.perf_counter() - started, error=str(exc)[:500])
        except Exception as exc:  # a bug, not the client's fault; the job ends, the server lives on
            self.store.finish(job.id, FAILED, seconds=time.perf_counter() - started,
                              error=f"internal error ({type(exc).__name__})")
        finally:
            self._running.pop(job.id, None)
            self._cancelled.discard(job.id)
