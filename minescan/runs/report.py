"""The run summary: every scene of the run, its status and numbers, and totals.

Written at the end of a run (also an interrupted one) as ``run_summary.json``
for machines and ``run_summary.md`` for people.  A scene's status is
``done`` (``resumed`` when an earlier run did it), ``failed`` with the
reason, or ``pending`` when the run stopped before reaching it.  A done
scene the domain-shift guard flagged (its input unlike the model's training
input, :mod:`minescan.model.statistics`) is counted in ``flagged`` and marked
in both files: its result, even an empty one, is not to be trusted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from minescan.runs.journal import Outcome
from minescan.results.atomic import write_atomically

SUMMARY_JSON = "run_summary.json"
SUMMARY_MARKDOWN = "run_summary.md"


@dataclass(frozen=True)
class SceneReport:
    """One scene's line in the summary."""

    input: str
    product_id: str
    status: str
    resumed: bool = False
    attempts: int = 0
    outcome: Outcome | None = None
    error: str | None = None
    retried: int = 0  # jobs of this scene run again because their worker died (Ray runs)


@dataclass(frozen=True)
class RunSummary:
    """All scenes of a run, in input order, and how the run ended."""

    scenes: tuple[SceneReport, ...]
    model: str
    out_dir: str
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.scenes)

    @property
    def flagged(self) -> int:
        """Done scenes the domain-shift guard flagged as unreliable."""
        return sum(bool(s.outcome and s.outcome.flagged) for s in self.scenes)

    @property
    def detections(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for scene in self.scenes:
            if scene.outcome:
                total.update(scene.outcome.detections)
        return dict(sorted(total.items()))

    @property
    def outside(self) -> dict[str, int] | None:
        """Detections outside every concession per class, over the done scenes joined with concessions (None: none was)."""
        joined = [s.outcome.outside for s in self.scenes if s.outcome and s.outcome.outside is not None]
        if not joined:
            return None
        total: Counter[str] = Counter()
        for counts in joined:
            total.update(counts)
        return dict(sorted(total.items()))

    @property
    def flagged_detections(self) -> int:
        """Detections flagged as mostly masked (clouds...), over the done scenes."""
        return sum(s.outcome.masked_flagged for s in self.scenes if s.outcome)

    @property
    def tiles(self) -> int:
        return sum(s.outcome.tiles for s in self.scenes if s.outcome)

    @property
    def gated(self) -> int:
        """Tiles the classifier gate kept from the detector, over the done scenes."""
        return sum(s.outcome.gated for s in self.scenes if s.outcome)

    @property
    def seconds(self) -> float:
        return sum(s.outcome.seconds for s in self.scenes if s.outcome)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "out_dir": self.out_dir,
            "interrupted": self.interrupted,
            "totals": {
                "scenes": len(self.scenes),
                "done": self.count("done"),
                "failed": self.count("failed"),
                "pending": self.count("pending"),
                "flagged": self.flagged,
                "tiles": self.tiles,
                "gated": self.gated,
                "detections": self.detections,
                "outside_concessions": self.outside,
                "flagged_detections": self.flagged_detections,
                "seconds": round(self.seconds, 3),
            },
            "scenes": [asdict(s) for s in self.scenes],
        }


def _classes(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def to_markdown(summary: RunSummary) -> str:
    """The summary as a short Markdown report."""
    lines = [
        "# minescan run summary",
        "",
        f"Model `{summary.model}`, results in `{summary.out_dir}`."
        + (" **The run was interrupted**; the same command resumes it." if summary.interrupted else ""),
        "",
        f"{len(summary.scenes)} scenes: {summary.count('done')} done, {summary.count('failed')} failed, "
        f"{summary.count('pending')} pending, {summary.flagged} flagged as unreliable; {summary.tiles} tiles"
        f"{f' ({summary.gated} gated off by the classifier gate)' if summary.gated else ''}, detections: {_classes(summary.detections)}; "
        f"{summary.seconds:.1f} s scanning.",
        *([""] + [f"Outside every concession: {_classes(summary.outside)}."] if summary.outside is not None else []),
        *([""] + [f"{summary.flagged_detections} detection(s) flagged as mostly under clouds (masked): not to be trusted."]
          if summary.flagged_detections else []),
        "",
        "| scene | date | status | tiles | clear | detections | outside concessions | input shift | seconds | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary.scenes:
        status = s.status + (" (earlier run)" if s.resumed else "") + (f" (retried {s.retried}x: worker lost)" if s.retried else "")
        if s.outcome:
            o = s.outcome
            shift = "-" if o.input_shift is None else f"{o.input_shift:.2f}" + (" **FLAGGED: unreliable**" if o.flagged else "")
            clear = "-" if o.clear_share is None else f"{o.clear_share:.0%}" + (f" ({o.masked_tiles} tiles not scanned)"
                                                                                if o.masked_tiles else "")
            outside = "-" if o.outside is None else _classes(o.outside)
            lines.append(f"| {s.product_id} | {o.date or '-'} | {status} | {o.tiles} | {clear} | {_classes(o.detections)}"
                         f"{f' ({o.masked_flagged} flagged: masked)' if o.masked_flagged else ''} | {outside} | {shift} | {o.seconds:.1f} "
                         f"| {Path(o.result).name} |")
        else:
            lines.append(f"| {s.product_id} | | {status} | | | | | | | |")
    failed = [s for s in summary.scenes if s.status == "failed"]
    if failed:
        lines += ["", "## Failed", ""] + [f"- {s.product_id}: {s.error}" for s in failed]
    flagged = [s for s in summary.scenes if s.outcome and s.outcome.flagged]
    if flagged:
        lines += ["", "## Flagged: input unlike the model's training input", "",
                  "Their results, even empty ones, are not to be trusted (see the README, *New scenes*).", ""]
        lines += [f"- {s.product_id}: input shift {s.outcome.input_shift:.2f} > threshold {s.outcome.shift_threshold:g}"
                  for s in flagged if s.outcome and s.outcome.input_shift is not None]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, summary: RunSummary) -> tuple[Path, Path]:
    """Write ``run_summary.json`` and ``run_summary.md`` into ``folder``."""
    as_json, as_markdown = folder / SUMMARY_JSON, folder / SUMMARY_MARKDOWN
    write_atomically(as_json, (json.dumps(summary.to_json(), indent=2) + "\n").encode())
    write_atomically(as_markdown, to_markdown(summary).encode())
    return as_json, as_markdown
