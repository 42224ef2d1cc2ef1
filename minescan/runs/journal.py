"""The run journal: what happened to each scene, in SQLite in the run folder.

One row per input: its state (``running``, ``done``, ``failed``), the
fingerprint of everything its result depends on (model file hash and
settings), how many times it was started, and its outcome or failure
reason.  Each change is one committed transaction, so the journal survives
``kill -9`` at any moment in a consistent state.

Crash safety comes from the order of steps around it: mark ``running`` ->
scan -> write the result files (each atomically renamed into place) -> mark
``done``.  A scene whose result file exists but whose row is not ``done``
(killed between the rename and the commit) is simply scanned again and its
files replaced, never duplicated, because they are named after the product.
A scene is skipped only when its row is ``done`` with the same fingerprint
and its result file is still there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from minescan.errors import MinescanError

JOURNAL_NAME = "journal.sqlite"
RUNNING, DONE, FAILED = "running", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    input TEXT PRIMARY KEY,
    product_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    quicklook TEXT,
    tiles INTEGER,
    skipped INTEGER,
    detections TEXT,
    seconds REAL,
    error TEXT,
    updated REAL NOT NULL
)
"""


_ADDED_COLUMNS = ("input_shift", "shift_threshold", "gated")


class JournalError(MinescanError):
    """A journal that cannot be opened or written."""


@dataclass(frozen=True)
class Outcome:
    """A finished scene: its files and numbers; ``detections`` counts per class label."""

    result: str
    quicklook: str | None
    tiles: int
    skipped: int
    detections: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    input_shift: float | None = None  # the domain-shift guard's score (None: the model records no input statistics)
    shift_threshold: float | None = None
    gated: int = 0  # tiles the classifier gate kept from the detector (minescan.scan.gate)
    # The scan's context (minescan.scan.assess), one JSON column in the journal: the sensing date, the clear share
    # under the quality mask (None: no mask), tiles the mask kept from the detector, detections flagged as masked,
    # and detections outside every concession per class (None: no concession layer).
    date: str | None = None
    clear_share: float | None = None
    masked_tiles: int = 0
    masked_flagged: int = 0
    outside: dict[str, int] | None = None
    # What the run's report reads the scene from again (chips, quicklooks): the raster scanned, its red, green and
    # blue bands there and its nodata.
    dataset: str | None = None
    bands: list[int] | None = None
    nodata: float | None = None

    def context(self) -> str:
        return json.dumps({"date": self.date, "clear_share": self.clear_share, "masked_tiles": self.masked_tiles,
                           "masked_flagged": self.masked_flagged, "outside": self.outside, "dataset": self.dataset,
                           "bands": self.bands, "nodata": self.nodata})

    @property
    def flagged(self) -> bool:
        """Whether the guard flagged the scene as unreliable."""
        return self.input_shift is not None and self.shift_threshold is not None and self.input_shift > self.shift_threshold


@dataclass(frozen=True)
class Entry:
    """A journal row."""

    input: str
    product_id: str
    fingerprint: str
    state: str
    attempts: int
    outcome: Outcome | None
    error: str | None
    updated: float


class Journal:
    """The journal of one run folder; use as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_NAME
        try:
            # isolation_level=None: every statement commits on its own unless inside BEGIN ... COMMIT.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers (a monitor, a test) never block the run
            self._db.execute(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(scenes)")}
            for column in _ADDED_COLUMNS:  # journals of earlier minescan versions lack them
                if column not in have:
                    self._db.execute(f"ALTER TABLE scenes ADD COLUMN {column} REAL")
            if "context" not in have:
                self._db.execute("ALTER TABLE scenes ADD COLUMN context TEXT")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the run journal ({exc})") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot write the run journal ({exc})") from exc

    def get(self, key: str) -> Entry | None:
        """The row for input ``key``, or None."""
        row = self._db.execute(
            "SELECT input, product_id, fingerprint, state, attempts, result, quicklook, tiles, skipped, detections, "
            "seconds, error, updated, input_shift, shift_threshold, gated, context FROM scenes WHERE input = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        (key, product_id, fingerprint, state, attempts, result, quicklook, tiles, skipped, detections, seconds, error, updated,
         shift, threshold, gated, context) = row
        outcome = (Outcome(result, quicklook, tiles, skipped, json.loads(detections), seconds, shift, threshold,
                           int(gated or 0), **(json.loads(context) if context else {}))
                   if state == DONE else None)
        return Entry(key, product_id, fingerprint, state, attempts, outcome, error, updated)

    def start(self, key: str, product_id: str, fingerprint: str) -> None:
        """Mark ``key`` running under ``fingerprint`` and count the attempt."""
        self._write(
            "INSERT INTO scenes (input, product_id, fingerprint, state, attempts, updated) VALUES (?, ?, ?, 'running', 1, ?) "
            "ON CONFLICT (input) DO UPDATE SET product_id = excluded.product_id, fingerprint = excluded.fingerprint, "
            "state = 'running', attempts = attempts + 1, result = NULL, quicklook = NULL, tiles = NULL, skipped = NULL, "
            "detections = NULL, seconds = NULL, error = NULL, updated = excluded.updated",
            (key, product_id, fingerprint, time.time()),
        )

    def finish(self, key: str, outcome: Outcome) -> None:
        """Mark ``key`` done; call only once its files are in place."""
        self._write(
            "UPDATE scenes SET state = 'done', result = ?, quicklook = ?, tiles = ?, skipped = ?, detections = ?, "
            "seconds = ?, input_shift = ?, shift_threshold = ?, gated = ?, context = ?, updated = ? WHERE input = ?",
            (outcome.result, outcome.quicklook, outcome.tiles, outcome.skipped, json.dumps(outcome.detections),
             outcome.seconds, outcome.input_shift, outcome.shift_threshold, outcome.gated, outcome.context(), time.time(),
             key),
        )

    def fail(self, key: str, product_id: str, fingerprint: str, reason: str) -> None:
        """Record that ``key`` failed and why (also for inputs that never got as far as :meth:`start`)."""
        self._write(
            "INSERT INTO scenes (input, product_id, fingerprint, state, attempts, error, updated) "
            "VALUES (?, ?, ?, 'failed', 1, ?, ?) "
            "ON CONFLICT (input) DO UPDATE SET state = 'failed', error = excluded.error, updated = excluded.updated",
            (key, product_id, fingerprint, reason, time.time()),
        )
