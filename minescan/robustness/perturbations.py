"""Radiometric and geometric perturbations of a scene, in reflectance, as new imagery brings them.

A :class:`Perturbation` is an immutable value: a kind (``haze``, ``brightness``,
``contrast``, ``gamma``, ``band_gain``, ``noise``, ``blur``, ``jpeg``,
``misregistration``), its parameters and a label for tables.  It acts on
*reflectance* [B, H, W] (float64), so one definition serves DN scenes (scale
10000, the product's offset) and reflectance scenes (scale 1) alike:
:func:`perturb_values` converts a block of pixel values to reflectance with
the scene's ``scale`` and ``offset``, perturbs it, converts back in the data's
own type (rounded and clipped to the type's range), and leaves nodata pixels
exactly as they were (a valid pixel that would land on the nodata value is
moved one unit away, so it stays valid).

Invariants:

- pointwise kinds (haze, brightness, contrast, gamma, band_gain) need no
  neighbours; the others read at most :attr:`Perturbation.halo` px around a
  block, so a scene perturbed strip by strip with that halo equals the scene
  perturbed whole;
- ``jpeg`` works on 8 x 8 blocks aligned to the scene's pixel (0, 0): blocks
  perturbed separately must start at multiples of 8 (:func:`perturb_values`
  takes the block's ``top``/``left`` in the scene);
- ``noise`` is a function of ``seed`` and the pixel's place in the scene, not
  of the block layout.

:data:`STANDARD` is the set ``minescan evaluate --robustness`` reports; the
issue that asked for it quoted haze as ``DN x 0.8 + 600``, which is
``haze(0.8, 0.06)`` here at scale 10000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minescan.errors import MinescanError

# The true-colour window of the default rendering (gain 2.5): reflectance 0-0.4 <-> 0-255.
# JPEG-like quantisation steps are defined as if that rendering had been compressed.
_JPEG_RANGE = 0.4
# JPEG's standard luminance quantisation table (ITU T.81, Annex K), steps in 8-bit levels.
_JPEG_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], np.float64)
CONTRAST_PIVOT = 0.1  # reflectance that a contrast change keeps fixed (typical land in B02-B04)

KINDS = ("none", "haze", "brightness", "contrast", "gamma", "band_gain", "noise", "blur", "jpeg", "misregistration")


class PerturbationError(MinescanError, ValueError):
    """A perturbation that cannot be made (unknown kind, parameters out of range)."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: ``kind`` with ``params`` (see :func:`make`); ``label`` for tables."""

    kind: str
    params: tuple[float, ...] = ()

    @property
    def label(self) -> str:
        p, kind = self.params, self.kind
        if kind == "none":
            return "-"
        if kind == "haze":
            return f"x{p[0]:g} + {p[1]:g}"
        if kind == "contrast":
            return f"x{p[0]:g} about {CONTRAST_PIVOT:g}"
        if kind == "band_gain":
            return f"bands x{1 + p[0]:g} .. x{1 - p[0]:g}"
        formats = {"brightness": "x{:g}", "gamma": "^{:g}", "noise": "sigma {:g}", "blur": "sigma {:g} px",
                   "jpeg": "quality {:g}", "misregistration": "band 1 by {:g} px"}
        return formats[kind].format(p[0])

    @property
    def halo(self) -> int:
        """Pixels around a block this perturbation reads."""
        if self.kind == "blur":
            return int(math.ceil(3 * self.params[0]))
        if self.kind == "misregistration":
            return int(math.ceil(abs(self.params[0]))) + 1
        if self.kind == "jpeg":
            return 8
        return 0

    def apply(self, r: np.ndarray, *, top: int = 0, left: int = 0, seed: int = 0) -> np.ndarray:
        """Perturbed reflectance [B, H, W] (float64) of ``r``; ``top``/``left``: the block's place in the scene."""
        p = self.params
        if self.kind == "none":
            return r
        if self.kind == "haze":  # transmission t, path radiance (airlight) a, in reflectance
            return r * p[0] + p[1]
        if self.kind == "brightness":
            return r * p[0]
        if self.kind == "contrast":
            return CONTRAST_PIVOT + (r - CONTRAST_PIVOT) * p[0]
        if self.kind == "gamma":  # on the 0-1 range, negative values kept as they are
            return np.where(r > 0, np.power(np.clip(r, 0, None), p[0]), r)
        if self.kind == "band_gain":
            gains = np.linspace(1 + p[0], 1 - p[0], r.shape[0])
            return r * gains[:, None, None]
        if self.kind == "noise":
            return r + p[0] * _positional_normal(r.shape, top, left, seed)
        if self.kind == "blur":
            return gaussian_blur(r, p[0])
        if self.kind == "jpeg":
            return _jpeg_like(r, p[0], top, left)
        if self.kind == "misregistration":
            out = r.copy()
            out[0] = _shift(r[0], p[0], p[0])
            return out
        raise PerturbationError(f"unknown perturbation {self.kind!r}")


def make(kind: str, *params: float) -> Perturbation:
    """A checked :class:`Perturbation`.

    ``haze(t, a)``: ``r * t + a`` (0 < t <= 1, 0 <= a < 1); ``brightness(g)``:
    ``r * g``; ``contrast(c)``: ``pivot + (r - pivot) * c``; ``gamma(e)``:
    ``r ** e``; ``band_gain(s)``: bands scaled from ``1 + s`` (first) to ``1 - s``
    (last); ``noise(sigma)``: Gaussian, sigma in reflectance; ``blur(sigma)``:
    Gaussian, sigma in px (<= 4); ``jpeg(q)``: 8 x 8 DCT quantised with JPEG's
    luminance table at quality ``q`` (1-100); ``misregistration(d)``: band 1
    shifted by ``d`` px right and down (bilinear, |d| <= 4).
    """
    counts = {"none": 0, "haze": 2, "brightness": 1, "contrast": 1, "gamma": 1, "band_gain": 1, "noise": 1, "blur": 1,
              "jpeg": 1, "misregistration": 1}
    if kind not in counts:
        raise PerturbationError(f"unknown perturbation {kind!r}; known: {', '.join(KINDS)}")
    if len(params) != counts[kind] or not all(math.isfinite(v) for v in params):
        raise PerturbationError(f"perturbation {kind!r} takes {counts[kind]} finite number(s), got {params!r}")
    ok = {
        "haze": lambda t, a: 0 < t <= 1 and 0 <= a < 1,
        "brightness": lambda g: g > 0,
        "contrast": lambda c: c > 0,
        "gamma": lambda e: e > 0,
        "band_gain": lambda s: 0 <= s < 1,
        "noise": lambda s: s >= 0,
        "blur": lambda s: 0 < s <= 4,
        "jpeg": lambda q: 1 <= q <= 100,
        "misregistration": lambda d: abs(d) <= 4,
    }.get(kind, lambda *_: True)
    if not ok(*params):
        raise PerturbationError(f"perturbation {kind!r}: parameters {params!r} out of range (see minescan.robustness.perturbations.make)")
    return Perturbation(kind, tuple(float(v) for v in params))


# The standard set: (name, perturbation), mild then strong, as new Sentinel-2 imagery brings them.
STANDARD: tuple[tuple[str, Perturbation], ...] = (
    ("clear", make("none")),
    ("haze", make("haze", 0.9, 0.03)),
    ("haze", make("haze", 0.8, 0.06)),
    ("haze", make("haze", 0.6, 0.12)),
    ("darker", make("brightness", 0.7)),
    ("darker", make("brightness", 0.5)),
    ("brighter", make("brightness", 1.3)),
    ("brighter", make("brightness", 1.6)),
    ("contrast", make("contrast", 0.6)),
    ("contrast", make("contrast", 1.5)),
    ("gamma", make("gamma", 0.8)),
    ("gamma", make("gamma", 1.25)),
    ("band gain", make("band_gain", 0.15)),
    ("band gain", make("band_gain", 0.3)),
    ("noise", make("noise", 0.005)),
    ("noise", make("noise", 0.015)),
    ("blur", make("blur", 1.0)),
    ("blur", make("blur", 2.0)),
    ("jpeg", make("jpeg", 75)),
    ("jpeg", make("jpeg", 30)),
    ("misregistration", make("misregistration", 0.5)),
    ("misregistration", make("misregistration", 1.5)),
)


def perturb_values(values: np.ndarray, invalid: np.ndarray | None, perturbation: Perturbation, *, scale: float,
                   offset: float = 0.0, nodata: float | None = None, top: int = 0, left: int = 0,
                   seed: int = 0) -> np.ndarray:
    """``values`` [B, H, W] (the data's own type) perturbed; ``invalid`` [H, W] (True = nodata) kept as it is.

    Reflectance is ``(value + offset) / scale``.  Integer results are rounded
    and clipped to the type's range; a valid pixel that would equal ``nodata``
    moves one unit towards the data.  ``top``/``left`` place the block in the scene.
    """
    dtype = values.dtype
    r = (values.astype(np.float64) + offset) / scale
    out = perturbation.apply(r, top=top, left=left, seed=seed) * scale - offset
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
        if nodata is not None and info.min <= nodata <= info.max:
            step = 1 if nodata < info.max else -1
            out[out == nodata] = nodata + step
    elif nodata is not None and not math.isnan(nodata):
        out[out == nodata] = np.nextafter(nodata, np.inf)
    result = out.astype(dtype)
    if invalid is not None and invalid.any():
        result[:, invalid] = values[:, invalid]
    return result


def _positional_normal(shape: tuple[int, ...], top: int, left: int, seed: int) -> np.ndarray:
    """Standard normal noise that depends on each pixel's scene position (row, col) and band, not on the block."""
    bands, height, width = shape
    out = np.empty(shape, np.float64)
    for row in range(height):
        rng = np.random.default_rng([seed, top + row])
        line = rng.standard_normal((bands, left + width))  # the whole row up to the block's right edge
        out[:, row] = line[:, left:]
    return out


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(r: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of every band, edges replicated."""
    k = _gaussian_kernel(sigma)
    pad = len(k) // 2
    padded = np.pad(r, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    rows = sum(w * padded[:, i : i + r.shape[1], :] for i, w in enumerate(k))
    return sum(w * rows[:, :, i : i + r.shape[2]] for i, w in enumerate(k))


def _shift(band: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``band`` moved ``dx`` px right and ``dy`` px down, bilinear, edges replicated."""
    height, width = band.shape
    ys = np.clip(np.arange(height) - dy, 0, height - 1)
    xs = np.clip(np.arange(width) - dx, 0, width - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = band[y0][:, x0] * (1 - fx) + band[y0][:, x1] * fx
    bottom = band[y1][:, x0] * (1 - fx) + band[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _dct_matrix() -> np.ndarray:
    n = 8
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT = _dct_matrix()


def _jpeg_like(r: np.ndarray, quality: float, top: int, left: int) -> np.ndarray:
    """Each band's 8 x 8 blocks (aligned to the scene's origin) DCT-quantised as JPEG does at ``quality``."""
    if top % 8 or left % 8:
        raise PerturbationError(f"jpeg blocks must start at multiples of 8, got top {top}, left {left}")
    q = 5000 / quality if quality < 50 else 200 - 2 * quality  # libjpeg's quality scaling
    steps = np.clip(np.floor((_JPEG_TABLE * q + 50) / 100), 1, 255) * (_JPEG_RANGE / 255)
    bands, height, width = r.shape
    h8, w8 = -(-height // 8) * 8, -(-width // 8) * 8
    padded = np.pad(r, ((0, 0), (0, h8 - height), (0, w8 - width)), mode="edge")
    blocks = padded.reshape(bands, h8 // 8, 8, w8 // 8, 8).transpose(0, 1, 3, 2, 4)
    coeffs = _DCT @ blocks @ _DCT.T
    coeffs = np.round(coeffs / steps) * steps
    restored = (_DCT.T @ coeffs @ _DCT).transpose(0, 1, 3, 2, 4).reshape(bands, h8, w8)
    return restored[:, :height, :width]
