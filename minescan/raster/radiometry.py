"""Radiometry: from the scene's pixel values to the uint8 RGB a model takes.

uint8 scenes pass through unchanged.  uint16 Sentinel-2 digital numbers
become reflectance ``(DN + offset) / scale`` (scale 10000; offset 0, or the
product's BOA_ADD_OFFSET, e.g. -1000, for L2A from processing baseline
04.00), then the usual true-colour rendering ``clip(reflectance * gain, 0, 1)
* 255`` with gain 2.5.  A percentile stretch instead maps each band's low and
high percentile, measured once over the whole scene (never per tile, which
would render neighbouring tiles differently), to 0 and 255.  Nodata pixels
become 0 in every band.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minescan.errors import MinescanError


class RadiometryError(MinescanError):
    """Settings or data the radiometric conversion cannot handle."""


@dataclass(frozen=True)
class Radiometry:
    """A linear map per band, ``uint8 = clip((value - low) / (high - low), 0, 1) * 255``.

    ``low`` and ``high`` hold one value per band, in the data's own units.
    ``passthrough`` marks uint8 data, which is used as it is.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    passthrough: bool = False
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def apply(self, data: np.ndarray, nodata: np.ndarray | None = None) -> np.ndarray:
        """Bands-first ``data`` [B, H, W] to bands-last uint8 [H, W, B]; ``nodata`` (bool [H, W]) to 0."""
        rgb = np.empty(data.shape[1:] + data.shape[:1], np.uint8)
        if self.passthrough:
            for band in range(data.shape[0]):
                rgb[..., band] = data[band]
        else:
            # A 65536-entry table per band turns the float formula into one gather per
            # pixel: measured 1.5x faster than evaluating it per pixel (2.2 vs 3.3 ms per
            # 640 px tile), identical output.
            tables = self._tables(data.dtype)
            for band in range(data.shape[0]):
                np.take(tables[band], data[band], out=rgb[..., band])
        if nodata is not None:
            rgb[nodata] = 0
        return rgb

    def _tables(self, dtype: np.dtype) -> np.ndarray:
        if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise RadiometryError(f"cannot render {np.dtype(dtype)} data; minescan reads uint8 or uint16")
        key = np.dtype(dtype).str
        if key not in self._cache:
            values = np.arange(np.iinfo(dtype).max + 1, dtype=np.float64)
            low = np.asarray(self.low, np.float64)[:, None]
            span = (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64))[:, None]
            scaled = np.clip((values[None, :] - low) * (255.0 / span), 0.0, 255.0)
            self._cache[key] = np.floor(scaled + 0.5).astype(np.uint8)
        return self._cache[key]


def reflectance_gain(bands: int, *, gain: float = 2.5, offset: float = 0.0, scale: float = 10000.0) -> Radiometry:
    """Sentinel-2 true colour: DN to reflectance ``(DN + offset) / scale``, times ``gain``."""
    if gain <= 0:
        raise RadiometryError(f"gain must be positive, got {gain}")
    if scale <= 0:
        raise RadiometryError(f"scale must be positive, got {scale}")
    low = -offset
    high = scale / gain - offset
    return Radiometry((low,) * bands, (high,) * bands)


def percentile_stretch(sample: np.ndarray, valid: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> Radiometry:
    """Per-band stretch from a scene-wide ``sample`` [B, H, W] and its ``valid`` mask [H, W]."""
    if not 0 <= low_pct < high_pct <= 100:
        raise RadiometryError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    if not valid.any():
        raise RadiometryError("cannot stretch: the scene has no valid pixels")
    lows, highs = [], []
    for band in sample:
        lo, hi = np.percentile(band[valid], [low_pct, high_pct])
        lows.append(float(lo))
        highs.append(float(hi) if hi > lo else float(lo) + 1.0)
    return Radiometry(tuple(lows), tuple(highs))


def passthrough(bands: int) -> Radiometry:
    """uint8 data used as it is."""
    return Radiometry((0.0,) * bands, (255.0,) * bands, passthrough=True)
