"""A baseline: an earlier run's folder, whose done results a run compares its own with (``scan --baseline``).

A run folder holds ``run_summary.json`` (:mod:`minescan.runs.report`): each
done scene's result file, sensing date and what it was read from.  Results
are found by name in the folder itself (a run folder may have been moved or
copied since), and a scene whose result is missing is left out with a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minescan.errors import MinescanError


class BaselineError(MinescanError):
    """A baseline folder that cannot be compared with."""


@dataclass(frozen=True)
class BaselineScene:
    """One done scene of the baseline run: its result file and what its scan read (for "before" chips)."""

    product_id: str
    result: Path
    date: str | None
    dataset: str | None
    bands: tuple[int, ...] | None
    nodata: float | None


@dataclass(frozen=True)
class Baseline:
    """The done scenes of an earlier run (see the module docstring)."""

    folder: Path
    scenes: tuple[BaselineScene, ...]
    missing: tuple[str, ...] = ()  # product ids whose result file is gone

    @property
    def results(self) -> list[Path]:
        return [s.result for s in self.scenes]

    @property
    def dates(self) -> list[str]:
        return sorted({s.date for s in self.scenes if s.date})

    def describe(self) -> str:
        dates = ", ".join(self.dates) or "dates unknown"
        missing = f"; {len(self.missing)} result(s) missing" if self.missing else ""
        return f"{self.folder} ({len(self.scenes)} scene(s), {dates}{missing})"


def read_baseline(folder: str | Path) -> Baseline:
    """The baseline run in ``folder``; :class:`BaselineError` when it is not a run folder or has no done scene."""
    from minescan.runs.report import SUMMARY_JSON

    folder = Path(folder)
    summary = folder / SUMMARY_JSON
    if not folder.is_dir():
        raise BaselineError(f"baseline {folder}: not a folder")
    if not summary.is_file():
        raise BaselineError(f"baseline {folder}: no {SUMMARY_JSON} (not a minescan run folder, or its run never finished)")
    try:
        scenes = json.loads(summary.read_text())["scenes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"baseline {summary}: not a run summary ({exc})") from None
    found, missing = [], []
    for scene in scenes:
        outcome = scene.get("outcome") if isinstance(scene, dict) else None
        if not outcome or scene.get("status") != "done":
            continue
        result = folder / Path(outcome["result"]).name
        if Path(result).suffix.lower() in (".tif", ".tiff"):
            continue  # a classifier's heatmap holds no sites
        if not result.is_file():
            missing.append(scene.get("product_id", result.stem))
            continue
        bands = outcome.get("bands")
        found.append(BaselineScene(scene.get("product_id", result.stem), result, outcome.get("date"), outcome.get("dataset"),
                                   tuple(bands) if bands else None, outcome.get("nodata")))
    if not found:
        raise BaselineError(f"baseline {folder}: no scene of its run is done with a detector's result"
                            + (f" ({len(missing)} result file(s) missing)" if missing else ""))
    return Baseline(folder, tuple(found), tuple(missing))
