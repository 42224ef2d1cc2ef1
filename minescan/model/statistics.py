"""Input statistics: what a model's uint8 input looked like in training, and how far a scene's lies from it.

The domain-shift guard compares *rendered* input (the uint8 RGB the model
takes, after the scene's normalisation), so it sees what the model sees: a
hazy scene under a fixed gain renders brighter and flatter and is far from
the training input; the same scene under a per-scene stretch renders as a
clear one and is not.

:class:`InputStatistics` holds, per band, the levels at :data:`PERCENTILES`
and the mean and standard deviation of the valid pixels.  The **input shift**
of a scene (:meth:`InputStatistics.shift`) is, for each band, the mean
absolute difference between the scene's and the reference's levels at those
percentiles (a discrete 1-Wasserstein distance between the two level
distributions), divided by the reference band's standard deviation; the
score is the largest over the bands.  0 means the same distribution; 1 means
the scene's levels lie, on average, one training standard deviation away.

Measured 2026-12-03 on minescan's synthetic scenes (``benchmarks/robustness.py``):
12 fresh clear 2048 px scenes (seeds 201-212) score 0.04-0.23 against the
fixed-gain demo detector of stop 11 given the calibration scenes' statistics,
0.02-0.19 against the stretch-normalised demo detector; under the fixed gain
the perturbations that break that detector score 0.73 (x1.3) to 3.9 (heavy
haze) on three fresh 4096 px scenes, the issue's haze 1.94.  Hence the
default threshold :attr:`minescan.defaults.Defaults.shift_threshold`, 0.5:
twice the largest clear scene, below every harmful change measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


STATISTICS_KEY = "minescan.input_statistics"
PERCENTILES = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0)


class StatisticsError(ValueError):
    """Input statistics that cannot be read (the metadata parser reports it as a MetadataError)."""


MIN_SPREAD = 4.0  # uint8 levels: a reference band flatter than this is compared as if it had this spread


@dataclass(frozen=True)
class InputStatistics:
    """Per band: ``levels`` at ``percentiles``, ``mean`` and ``std`` of valid uint8 input; ``pixels`` counted; ``source`` says of what."""

    percentiles: tuple[float, ...]
    levels: tuple[tuple[float, ...], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixels: int
    source: str = ""

    @classmethod
    def measure(cls, rgb: np.ndarray, valid: np.ndarray, source: str = "") -> "InputStatistics":
        """Statistics of uint8 input ``rgb`` [..., B] over ``valid`` [...] (True = a valid pixel)."""
        values = rgb[valid].astype(np.float64)  # [N, B]
        if values.shape[0] == 0:
            raise ValueError("no valid pixels to measure")
        levels = np.percentile(values, PERCENTILES, axis=0).T  # [B, P]
        return cls(PERCENTILES, tuple(tuple(round(float(v), 3) for v in band) for band in levels),
                   tuple(round(float(v), 3) for v in values.mean(axis=0)), tuple(round(float(v), 3) for v in values.std(axis=0)),
                   int(values.shape[0]), source)

    @classmethod
    def combine(cls, parts: list["InputStatistics"], source: str = "") -> "InputStatistics":
        """The pooled statistics of several measurements (levels averaged, weighted by pixels)."""
        weights = np.array([p.pixels for p in parts], np.float64)
        weights /= weights.sum()
        levels = sum(w * np.array(p.levels) for w, p in zip(weights, parts))
        mean = sum(w * np.array(p.mean) for w, p in zip(weights, parts))
        second = sum(w * (np.array(p.std) ** 2 + np.array(p.mean) ** 2) for w, p in zip(weights, parts))
        std = np.sqrt(np.maximum(second - mean**2, 0))
        return cls(parts[0].percentiles, tuple(tuple(round(float(v), 3) for v in band) for band in levels),
                   tuple(round(float(v), 3) for v in mean), tuple(round(float(v), 3) for v in std),
                   int(sum(p.pixels for p in parts)), source)

    def shift(self, scene: "InputStatistics") -> float:
        """How far ``scene``'s input lies from this reference (see the module docstring); >= 0."""
        if scene.percentiles != self.percentiles or len(scene.levels) != len(self.levels):
            raise ValueError("statistics measured at different percentiles or band counts cannot be compared")
        ref, got = np.array(self.levels), np.array(scene.levels)
        spread = np.maximum(np.array(self.std), MIN_SPREAD)
        return float(np.max(np.abs(got - ref).mean(axis=1) / spread))

    def to_json(self) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles), "levels": [list(b) for b in self.levels], "mean": list(self.mean),
                "std": list(self.std), "pixels": self.pixels, "source": self.source}

    @classmethod
    def from_json(cls, raw: Any) -> "InputStatistics":
        where = f"metadata {STATISTICS_KEY!r}"
        if not isinstance(raw, dict):
            raise StatisticsError(f"{where} must be an object, got {raw!r}"[:200])

        def numbers(value: Any) -> bool:
            return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                                   for v in value)

        pct, levels, mean, std = raw.get("percentiles"), raw.get("levels"), raw.get("mean"), raw.get("std")
        if not (numbers(pct) and pct and all(0 <= a < b <= 100 for a, b in zip(pct, pct[1:]))):
            raise StatisticsError(f"{where}: 'percentiles' must be rising numbers in [0, 100], got {pct!r}"[:200])
        if not (isinstance(levels, list) and levels and all(numbers(b) and len(b) == len(pct) for b in levels)):
            raise StatisticsError(f"{where}: 'levels' must hold {len(pct)} numbers per band"[:200])
        if not (numbers(mean) and numbers(std) and len(mean) == len(std) == len(levels) and all(s >= 0 for s in std)):
            raise StatisticsError(f"{where}: 'mean' and 'std' must hold one number per band (std >= 0)")
        pixels = raw.get("pixels", 0)
        if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 0:
            raise StatisticsError(f"{where}: 'pixels' must be a whole number, got {pixels!r}")
        source = raw.get("source", "")
        return cls(tuple(float(p) for p in pct), tuple(tuple(float(v) for v in b) for b in levels),
                   tuple(float(v) for v in mean), tuple(float(v) for v in std), pixels, str(source))
