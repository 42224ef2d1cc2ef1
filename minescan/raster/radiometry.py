"""Radiometry: from the scene's pixel values to the uint8 RGB a model takes.

Under the fixed gain, uint8 scenes pass through unchanged (a per-scene
normalisation or stretch maps them like any other type).  Any other integer or float data is
taken as reflectance ``(value + offset) / scale`` (Sentinel-2 DN: scale 10000;
offset 0, or the product's BOA_ADD_OFFSET, e.g. -1000, for L2A from
processing baseline 04.00; float exports of reflectance 0-1 from SNAP, openEO
or Earth Engine: scale 1), then the usual true-colour rendering
``clip(reflectance * gain, 0, 1) * 255`` with gain 2.5.  A percentile stretch
instead maps each band's low and high percentile, measured once over the
whole scene (never per tile, which would render neighbouring tiles
differently), to 0 and 255.  Nodata pixels become 0 in every band; so do NaN
pixels, whatever the nodata mask says.

A model may have been trained on another per-scene normalisation (its
recipe says which, :class:`~minescan.model.metadata.Normalisation`):
:func:`standardize` (each band's scene mean and standard deviation to fixed
uint8 levels) or :func:`histogram_match` (each band's scene percentiles to the
model's reference levels, piecewise linear).  All are one monotone map per
band (:class:`Radiometry`), evaluated two ways with the same rounding,
``floor(clip(x, 0, 255) + 0.5)``:

- 8 and 16 bit integers (uint8, uint16, int8, int16): a lookup table per
  band, indexed by the value's bit pattern (signed data is viewed as
  unsigned, no copy); in numpy it was 1.5x faster than the formula (2.2 vs
  3.3 ms per 640 px uint16 tile).
- 32 and 64 bit integers and floats: the formula per pixel (in float32 for
  float32 data, else float64); NaN renders 0 and +-inf 255 / 0.

Both run in the native module (:mod:`minescan.raster.native`), one pass over
the bands and the mask with the GIL released, bit for bit the numpy
reference kept in ``testkit/reference_render.py``.

Complex and boolean data cannot be rendered (:func:`renderable`).
:func:`default_scale` tells reflectance 0-1 from DN in float data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.raster.native import native

# Integer types rendered through a table: at most 65536 entries per band.
_TABLE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16))


class RadiometryError(MinescanError):
    """Settings or data the radiometric conversion cannot handle."""


def renderable(dtype: Any) -> bool:
    """Whether :class:`Radiometry` can render data of ``dtype``: real integers and floats.

    ``dtype`` may be anything :func:`numpy.dtype` takes, or a GDAL type name
    numpy does not know (rasterio's ``complex_int16``), which is not renderable.
    """
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return False
    return kind in "iuf"


@dataclass(frozen=True)
class Radiometry:
    """A linear map per band, ``uint8 = floor(clip((value - low) / (high - low), 0, 1) * 255 + 0.5)``.

    ``low`` and ``high`` hold one value per band, in the data's own units.
    ``passthrough`` marks uint8 data, which is used as it is.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    passthrough: bool = False
    # Per band (values, levels): a rising piecewise-linear map instead of the straight line from
    # low to high (histogram matching).  Below the first value and above the last, the end levels.
    curves: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def apply(self, data: np.ndarray, nodata: np.ndarray | None = None) -> np.ndarray:
        """Bands-first ``data`` [B, H, W] to bands-last uint8 [H, W, B]; ``nodata`` (bool [H, W]) to 0.

        ``data`` is not modified.
        """
        return self.render(data, nodata)[0]

    def render(self, data: np.ndarray, nodata: np.ndarray | None = None,
               out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """:meth:`apply` (into ``out`` [H, W, B] uint8 if given), and how many pixels were nodata.

        One pass of the native module with the GIL released: 8 and 16 bit data
        (uint8 passed through as an identity table) through the per-band tables,
        everything else through the formula or the curves.
        """
        dtype = data.dtype
        if not renderable(dtype):
            raise RadiometryError(f"cannot render {dtype} data; minescan renders integer or float data")
        data = np.ascontiguousarray(data)
        mask = None if nodata is None else np.ascontiguousarray(nodata, dtype=bool)
        rgb = np.empty(data.shape[1:] + data.shape[:1], np.uint8) if out is None else out
        if self.passthrough or dtype in _TABLE_DTYPES:
            index = data.view(np.dtype(f"u{dtype.itemsize}")) if dtype.kind == "i" else data
            masked = native.render_table(index, self._tables(dtype, data.shape[0]), mask, rgb)
        else:
            if dtype.itemsize < 4:  # float16: widened exactly; its work type is float64 as for every type but float32
                data = data.astype(np.float64)
            if self.curves is not None:
                xs, ys, offsets = self._knots()
                masked = native.render_curves(data, xs, ys, offsets, mask, rgb)
            else:
                low, factor = self._spans()
                masked = native.render_linear(data, low, factor, mask, rgb)
        return rgb, int(masked)

    def _spans(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.asarray(self.low, np.float64)
        return low, 255.0 / (np.asarray(self.high, np.float64) - low)

    def _knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The curves as flat knots (xs, ys) and each band's start in them (offsets, bands + 1)."""
        if "knots" not in self._cache:
            assert self.curves is not None
            xs = np.concatenate([np.asarray(c[0], np.float64) for c in self.curves])
            ys = np.concatenate([np.asarray(c[1], np.float64) for c in self.curves])
            offsets = np.cumsum([0] + [len(c[0]) for c in self.curves]).astype(np.int64)
            self._cache["knots"] = (xs, ys, offsets)
        return self._cache["knots"]

    def _tables(self, dtype: np.dtype, bands: int) -> np.ndarray:
        """[B, 2**bits] uint8: entry ``u`` renders the value whose bit pattern is ``u`` (uint8 passthrough: ``u``)."""
        key = (dtype.str, bands)
        if key not in self._cache:
            if self.passthrough:
                self._cache[key] = np.tile(np.arange(256, dtype=np.uint8), (bands, 1))
                return self._cache[key]
            patterns = np.arange(2 ** (8 * dtype.itemsize), dtype=np.dtype(f"u{dtype.itemsize}"))
            values = patterns.view(dtype).astype(np.float64)
            if self.curves is not None:
                scaled = np.stack([np.interp(values, xs, ys) for xs, ys in self.curves])
            else:
                low, factor = self._spans()
                scaled = (values[None, :] - low[:, None]) * factor[:, None]
            self._cache[key] = np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)
        return self._cache[key]


def reflectance_gain(bands: int, *, gain: float = DEFAULTS.gain, offset: float = DEFAULTS.offset,
                     scale: float = DEFAULTS.scale) -> Radiometry:
    """True colour: values to reflectance ``(value + offset) / scale``, times ``gain``."""
    if not np.isfinite(gain) or gain <= 0:
        raise RadiometryError(f"gain must be positive, got {gain}")
    if not np.isfinite(scale) or scale <= 0:
        raise RadiometryError(f"scale must be positive, got {scale}")
    if not np.isfinite(offset):
        raise RadiometryError(f"offset must be finite, got {offset}")
    low = -offset
    high = scale / gain - offset
    return Radiometry((low,) * bands, (high,) * bands)


def percentile_stretch(sample: np.ndarray, valid: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> Radiometry:
    """Per-band stretch from a scene-wide ``sample`` [B, H, W] and its ``valid`` mask [H, W].

    Works for every renderable dtype; NaN and infinite values are left out
    whatever ``valid`` says.  A band whose two percentiles coincide gets a span of
    one unit of the data (or, for floats, a millionth of the value) so that the
    map stays defined.
    """
    if not 0 <= low_pct < high_pct <= 100:
        raise RadiometryError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    floating = sample.dtype.kind == "f"
    lows, highs = [], []
    for band in sample:
        values = band[valid]
        if floating:
            values = values[np.isfinite(values)]
        if values.size == 0:
            raise RadiometryError("cannot stretch: the scene has no valid pixels")
        lo, hi = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
        if not hi > lo:
            hi = lo + (max(abs(lo) * 1e-6, 1e-12) if floating else 1.0)
        lows.append(lo)
        highs.append(hi)
    return Radiometry(tuple(lows), tuple(highs))


def _valid_values(sample: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """Each band's valid, finite values of a scene-wide sample; refuses a scene without any."""
    out = []
    for band in sample:
        values = band[valid]
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        if values.size == 0:
            raise RadiometryError("cannot measure the scene: it has no valid pixels")
        out.append(values.astype(np.float64))
    return out


def standardize(sample: np.ndarray, valid: np.ndarray, mean: float, std: float) -> Radiometry:
    """Per band, the scene's mean and standard deviation to ``mean`` and ``std`` uint8 levels (linear)."""
    lows, highs = [], []
    for values in _valid_values(sample, valid):
        mu, sigma = float(values.mean()), float(values.std())
        if not sigma > 0:
            sigma = max(abs(mu) * 1e-6, 1e-12)
        low = mu - mean * sigma / std
        lows.append(low)
        highs.append(low + 255.0 * sigma / std)
    return Radiometry(tuple(lows), tuple(highs))


def histogram_match(sample: np.ndarray, valid: np.ndarray, percentiles: tuple[float, ...],
                    reference: tuple[tuple[float, ...], ...]) -> Radiometry:
    """Per band, the scene's ``percentiles`` to the ``reference`` uint8 levels, piecewise linear between them.

    Knots whose scene values coincide (flat histograms) are merged, keeping the map a function.
    """
    bands = _valid_values(sample, valid)
    if len(reference) != len(bands):
        raise RadiometryError(f"the histogram reference has {len(reference)} band(s); the scene is read with {len(bands)}")
    curves = []
    for values, levels in zip(bands, reference):
        xs = np.percentile(values, percentiles)
        keep = np.concatenate([[True], np.diff(xs) > 0])
        xs, ys = xs[keep], np.asarray(levels, np.float64)[keep]
        if len(xs) == 1:
            xs, ys = np.array([xs[0], xs[0] + max(abs(xs[0]) * 1e-6, 1e-12)]), np.array([ys[0], ys[0]])
        curves.append((tuple(float(v) for v in xs), tuple(float(v) for v in ys)))
    return Radiometry(tuple(c[0][0] for c in curves), tuple(c[0][-1] for c in curves), curves=tuple(curves))


def passthrough(bands: int) -> Radiometry:
    """uint8 data used as it is."""
    return Radiometry((0.0,) * bands, (255.0,) * bands, passthrough=True)


def default_scale(sample: np.ndarray, valid: np.ndarray, *, ceiling: float = DEFAULTS.reflectance_ceiling,
                  dn_scale: float = DEFAULTS.scale) -> tuple[float, str]:
    """(scale, reason) for float data: reflectance 0-1 gets scale 1, DN gets ``dn_scale``.

    ``sample`` [B, H, W] is a scene-wide sample (e.g. :meth:`Scene.overview`)
    and ``valid`` [H, W] its valid pixels.  The data hold reflectance when the
    99th percentile of the valid, finite values over all bands is at most
    ``ceiling`` (reflectance rarely exceeds 1; DN of anything but deep shadow
    and water are in the hundreds).  The reason is a short phrase for the
    scan plan, e.g. ``reflectance (99th percentile 0.31 <= 2)``.
    """
    values = sample[:, valid]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float(dn_scale), "no valid pixels to tell reflectance from DN; DN assumed"
    p99 = float(np.percentile(values, 99))
    if p99 <= ceiling:
        return 1.0, f"reflectance (99th percentile {p99:.3g} <= {ceiling:g})"
    return float(dn_scale), f"DN (99th percentile {p99:.4g} > {ceiling:g})"


def radiometry_for(dtype: Any, bands: int, *, gain: float = DEFAULTS.gain, offset: float = DEFAULTS.offset,
                   scale: float = DEFAULTS.scale, stretch: tuple[float, float] | None = None,
                   sample: tuple[np.ndarray, np.ndarray] | None = None) -> Radiometry:
    """The rendering of ``bands`` bands of ``dtype`` data, from settings already resolved.

    - ``stretch`` (low, high percentiles): :func:`percentile_stretch` over ``sample``,
      given as (data [B, H, W], nodata [H, W], True = nodata), e.g. ``(o.data, o.nodata)``
      of ``o = scene.overview()``;
    - uint8 otherwise: passed through (``gain``, ``offset``, ``scale`` do not apply);
    - otherwise :func:`reflectance_gain` with ``gain``, ``offset``, ``scale``.

    It does not pick the scale of float data: call :func:`default_scale` for that.
    """
    if not renderable(dtype):
        raise RadiometryError(f"cannot render {dtype} data; minescan renders integer or float data")
    if stretch is not None:
        if sample is None:
            raise RadiometryError("a percentile stretch needs a scene-wide sample")
        data, nodata = sample
        return percentile_stretch(data, ~nodata, *stretch)
    if np.dtype(dtype) == np.uint8:
        return passthrough(bands)
    return reflectance_gain(bands, gain=gain, offset=offset, scale=scale)
