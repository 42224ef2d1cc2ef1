"""The classifier gate: a tile classifier screens each detector tile, and only tiles it passes are detected.

A cascade for scenes where mining covers a small share of the tiles: the gate
(a tile classifier, :mod:`minescan.scan.heatmap`) is cheap, the detector is
not.  A detector tile's *gate score* is the highest probability of a
foreground class (:func:`~minescan.scan.heatmap.foreground_classes`) over the
classifier's windows inside the tile: windows of the classifier's size laid
side by side over the tile's part inside the scene
(``DEFAULTS.gate_stride_share``; :func:`~minescan.raster.grid.axis_starts`,
so the last window of a row or column ends on the tile's edge).  A tile whose score is at or above the
threshold goes to the detector; one below is *gated off*: it is counted and
treated like an all-nodata tile (no detections; its row still ends, so
stitching and progress stay exact).

Invariants: threshold 0 passes every tile (the scan equals the ungated one);
a gated tile is never detected and never counted as nodata; the gate reads
the very pixels the detector would (one rendering serves both, so the gate's
recipe must render the scene as the detector's does: :func:`check_rendering`).

Cost, measured on 2 shared cores with the shipped demo models on a sparse
4096 px demo scene (64 tiles of 640 px): the demo classifier scores a tile's
100 windows (64 px, side by side) in about 50 ms (0.52 ms a window; INT8
0.26), twice the demo detector's ~22 ms per tile, so the gate slows that pair
down; it pays off for a detector that costs more than the gate per tile (the
ResNet-50 Faster R-CNN: ~1.7 s).  Windows every 32 px (361 per tile) took
24.6 s against 7.4 s side by side in one back-to-back run, gating 30 tiles
instead of 38.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.raster.grid import Tile, axis_starts
from minescan.scan.heatmap import foreground_classes


class GateError(MinescanError):
    """A gate that cannot screen the detector's tiles (not a classifier, a window larger than a tile, another rendering)."""


@dataclass(frozen=True)
class GatePlan:
    """The gate of one scan, resolved: which classifier, its window and stride, the threshold and where it came from."""

    name: str
    backend: str
    window: int
    stride: int
    threshold: float
    threshold_origin: str
    foreground: tuple[int, ...]  # 1-based classes whose probability is the gate score
    labels: tuple[str, ...]  # their names

    def describe(self) -> str:
        """One line for :meth:`~minescan.scan.plan.ScanPlan.explain`."""
        laid = "side by side" if self.stride == self.window else f"every {self.stride} px"
        return (f"{self.name} on {self.backend}: windows of {self.window} px {laid} inside each tile, "
                f"tiles whose max P({', '.join(self.labels)}) < {self.threshold:g} [{self.threshold_origin}] skip the detector")


def check_gate(gate: Any, name: str, detector_task: str) -> None:
    """Raise :class:`GateError` unless ``gate`` (a loaded model) is a tile classifier with a fixed square window
    and the scanned model is a detector."""
    if getattr(gate, "task", "detector") != "classifier":
        raise GateError(f"gate {name} is a detector; a gate must be a tile classifier (one probability per class)")
    if detector_task == "classifier":
        raise GateError(f"gate {name}: the gate screens a detector's tiles, but the scanned model is a classifier")
    sig = gate.signature
    if not sig.height or sig.height != sig.width:
        raise GateError(f"gate {name}: the classifier's input is {sig.height}x{sig.width} px; a gate needs a fixed square window")


def plan_gate(gate: Any, name: str, tile: int, threshold: float, threshold_origin: str) -> GatePlan:
    """The gate's plan for detector tiles of ``tile`` px; raise :class:`GateError` when its window does not fit."""
    window = int(gate.signature.height)
    if window > tile:
        raise GateError(f"gate {name}: its window of {window} px is larger than the detector's tile of {tile} px")
    classes = gate.signature.classes or len(gate.metadata.labels) or 1
    foreground = tuple(foreground_classes(classes))
    labels = tuple(gate.metadata.labels.get(c, str(c)) for c in foreground)
    stride = max(1, round(window * DEFAULTS.gate_stride_share))
    return GatePlan(name, gate.backend, window, stride, float(threshold), threshold_origin, foreground, labels)


def check_rendering(name: str, detector: tuple[Any, Any], gate: tuple[Any, Any],
                    normalisations: tuple[str, str] = ("", "")) -> None:
    """Raise :class:`GateError` unless the gate renders the scene as the detector does ((bands, radiometry) each;
    ``normalisations`` names the detector's and the gate's, for the message)."""
    if detector == gate:
        return
    if detector[0] != gate[0]:
        differs = f"reads bands {gate[0]} where the detector reads {detector[0]}"
    else:
        differs = f"normalises with {normalisations[1] or 'another rendering'} where the detector uses {normalisations[0] or 'another'}"
    raise GateError(f"gate {name} renders the scene differently from the detector: it {differs}; a gate must share "
                    "the detector's recipe (export one with the other's bands and normalisation)")


def window_starts(valid: int, window: int, stride: int) -> list[int]:
    """Offsets of the gate's windows along one axis of a tile whose part inside the scene is ``valid`` px."""
    return axis_starts(valid, window, window - stride)


class Gate:
    """Screens batches of detector tiles with a loaded classifier (see the module docstring); thread-safe."""

    def __init__(self, classifier: Any, plan: GatePlan, *, record: bool = False) -> None:
        self.classifier, self.plan = classifier, plan
        self._lock = threading.Lock()
        self.gated = 0  # tiles gated off so far
        self.gated_tiles: list[Tile] = []  # which (for the quicklook: the detector never looked there)
        # With ``record``: each screened tile's score by (tile row, tile col), for minescan calibrate-gate.
        self.scores_by_tile: dict[tuple[int, int], float] | None = {} if record else None

    def scores(self, rgb: np.ndarray, valid: list[tuple[int, int]]) -> np.ndarray:
        """Each tile's gate score: ``rgb`` uint8 [B, S, S, 3], ``valid`` each tile's (height, width) inside the scene."""
        w, s = self.plan.window, self.plan.stride
        windows, owner = [], []
        for index, (height, width) in enumerate(valid):
            for y in window_starts(height, w, s):
                for x in window_starts(width, w, s):
                    windows.append(rgb[index, y : y + w, x : x + w])
                    owner.append(index)
        step = DEFAULTS.gate_windows_per_call
        probabilities = np.concatenate([
            np.asarray(self.classifier.detect(np.ascontiguousarray(np.stack(windows[i : i + step]))), np.float32)
            for i in range(0, len(windows), step)
        ])
        found = probabilities[:, [c - 1 for c in self.plan.foreground]].max(axis=1)
        scores = np.full(len(valid), -np.inf, np.float32)
        np.maximum.at(scores, np.asarray(owner), found)
        return scores

    def passes(self, rgb: np.ndarray, tiles: list[Tile]) -> np.ndarray:
        """Which of the batch's ``tiles`` (pixels ``rgb``) go to the detector (score >= threshold); counts the
        others in :attr:`gated`."""
        scores = self.scores(rgb, [(t.valid_height, t.valid_width) for t in tiles])
        keep = scores >= self.plan.threshold
        with self._lock:
            self.gated += int((~keep).sum())
            self.gated_tiles.extend(t for t, k in zip(tiles, keep) if not k)
            if self.scores_by_tile is not None:
                self.scores_by_tile.update({(t.row, t.col): float(s) for t, s in zip(tiles, scores)})
        return keep
