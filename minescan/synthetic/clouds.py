"""Clouds over a synthetic scene: where they are, the SCL layer that marks them, the imagery they brighten.

A :class:`Cloud` is an irregular disc in scene pixels: its edge lies at
``radius * (1 + sum(a * (1 + sin(k * angle + phase))))`` from its centre, so
the disc of ``radius`` is always inside it and nothing lies beyond
:attr:`Cloud.outer` (``radius * (1 + 2 sum(a))``).  High and medium clouds
cast a shadow: the same shape moved by ``shadow`` (dx, dy) px; cirrus casts
none.

Rules, all measured at *centres*:

* a 10 m pixel (col, row) is in a cloud when its centre ``(col + 0.5, row + 0.5)`` is;
* a 20 m SCL cell (r, c) (scene px ``2r .. 2r+2`` x ``2c .. 2c+2``, the grid
  of :class:`minescan.quality.mask.QualityMask` with factor 2) is cloud when
  its centre ``(2c + 1, 2r + 1)`` is, shadow when the centre is in a shadow
  and in no cloud.

:func:`plan_clouds` centres one high cloud on each box of ``over`` with a
``radius`` reaching every corner of the box grown by one SCL cell
(``factor`` px), so every 10 m pixel of the box and every 20 m cell
touching it is cloud: a site "under cloud" is fully masked.

:func:`scl_layer` draws the SCL (class ids of :mod:`minescan.quality.scl`);
:func:`apply_clouds` brightens a strip of imagery: high cloud is white
(reflectance 0.5-0.58 in all bands, hiding whatever is under it), medium
cloud a grey veil (0.7 x 0.32 + 0.3 x the ground), thin cirrus a haze
(+0.06), shadow halves the ground.  Square scenes
(:mod:`minescan.synthetic.scene`) must not get :func:`apply_clouds`: the
square detector finds bright solid rectangles and could take a cloud's
white for an object; their clouds exist only in the SCL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from minescan.quality import scl as SCL

KINDS = ("high", "medium", "cirrus")
_SCL_CLASS = {"high": SCL.CLOUD_HIGH, "medium": SCL.CLOUD_MEDIUM, "cirrus": SCL.THIN_CIRRUS}
_MAX_WOBBLE = 0.12  # sum of the wobble amplitudes: the outer radius is at most 1.24 x radius

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Cloud:
    """An irregular disc centred at (``col``, ``row``) scene px (see the module docstring for its edge)."""

    col: float
    row: float
    radius: float
    kind: str = "high"
    shadow: tuple[float, float] = (0.0, 0.0)  # (dx, dy) px; (0, 0) = no shadow
    wobble: tuple[tuple[float, int, float], ...] = ()  # (amplitude, k, phase)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"a cloud's kind is one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.radius <= 0:
            raise ValueError(f"a cloud's radius must be > 0 px, got {self.radius}")

    @property
    def outer(self) -> float:
        """No point of the cloud lies farther than this from its centre."""
        return self.radius * (1 + 2 * sum(a for a, _, _ in self.wobble))

    @property
    def casts_shadow(self) -> bool:
        return self.kind != "cirrus" and self.shadow != (0.0, 0.0)

    def extent(self, shadow: bool = False) -> Box:
        """Bounding box (x0, y0, x1, y1) of the cloud, or of its shadow."""
        dx, dy = self.shadow if shadow else (0.0, 0.0)
        r = self.outer
        return self.col + dx - r, self.row + dy - r, self.col + dx + r, self.row + dy + r

    def contains(self, x: np.ndarray, y: np.ndarray, shadow: bool = False) -> np.ndarray:
        """Whether points (``x``, ``y``, scene px, broadcast) lie in the cloud (or its shadow)."""
        dx, dy = self.shadow if shadow else (0.0, 0.0)
        u, v = x - (self.col + dx), y - (self.row + dy)
        distance = np.hypot(u, v)
        edge = np.full(np.broadcast_shapes(np.shape(u), np.shape(v)), self.radius, np.float64)
        if self.wobble:
            angle = np.arctan2(v, u)
            edge = self.radius * (1 + sum(a * (1 + np.sin(k * angle + phase)) for a, k, phase in self.wobble))
        return distance < edge


@dataclass(frozen=True)
class Clouds:
    """The clouds over a ``width`` x ``height`` px scene."""

    clouds: tuple[Cloud, ...]
    width: int
    height: int

    def __iter__(self):
        return iter(self.clouds)

    def __len__(self) -> int:
        return len(self.clouds)

    def touches(self, box: Box, margin: float = 2.0) -> bool:
        """Whether any cloud or shadow's bounding box comes within ``margin`` px of ``box``."""
        return any(_overlap(extent, box, margin) for c in self.clouds for extent in _extents(c))


def _extents(cloud: Cloud) -> list[Box]:
    return [cloud.extent()] + ([cloud.extent(shadow=True)] if cloud.casts_shadow else [])


def _overlap(a: Box, b: Box, margin: float = 0.0) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def covering_radius(box: Box, factor: int = 2) -> float:
    """The radius of a disc at the box's centre reaching every corner of the box grown by ``factor`` px (+1 px)."""
    x0, y0, x1, y1 = box
    return math.hypot((x1 - x0) / 2 + factor, (y1 - y0) / 2 + factor) + 1.0


def _wobble(rng: np.random.Generator) -> tuple[tuple[float, int, float], ...]:
    amplitudes = rng.dirichlet(np.ones(3)) * rng.uniform(0.04, _MAX_WOBBLE)
    return tuple((float(a), int(k), float(rng.uniform(0, 2 * np.pi))) for a, k in zip(amplitudes, (2, 3, 5)))


def plan_clouds(width: int, height: int, seed: int, *, over: Iterable[Box] = (), count: int = 0,
                radius: tuple[float, float] = (40, 160), avoid: Iterable[Box] = (), factor: int = 2,
                kinds: tuple[str, ...] = KINDS, over_margin: float = 0.0) -> Clouds:
    """Clouds over a ``width`` x ``height`` scene: one high cloud covering each box of ``over``, plus ``count`` random ones.

    All clouds of a scene cast their shadows the same way (one sun), 0.5-1.0
    radius away.  ``avoid`` boxes are kept clear: a random cloud (or shadow)
    whose bounding box comes within 2 px of one is drawn again (up to 100
    tries, then left out), and a covering cloud's shadow is turned (16
    directions) until it keeps clear, else the cloud casts none.  A
    covering cloud itself is not checked against ``avoid``: the caller
    chooses ``over``.  Random clouds have a radius in ``radius`` and a kind
    from ``kinds``; a covering cloud's radius is :func:`covering_radius`
    plus ``over_margin`` px.
    """
    rng = np.random.default_rng(seed)
    avoid = [tuple(map(float, b)) for b in avoid]
    sun = float(rng.uniform(0, 2 * np.pi))

    def clear(cloud: Cloud) -> bool:
        return not any(_overlap(e, b, 2.0) for e in _extents(cloud) for b in avoid)

    clouds: list[Cloud] = []
    for box in over:
        x0, y0, x1, y1 = map(float, box)
        r = covering_radius((x0, y0, x1, y1), factor) + over_margin
        base = Cloud((x0 + x1) / 2, (y0 + y1) / 2, r, "high", (0.0, 0.0), _wobble(rng))
        distance = r * float(rng.uniform(0.5, 1.0))
        for turn in range(16):
            angle = sun + turn * np.pi / 8
            candidate = Cloud(base.col, base.row, r, "high", (distance * math.cos(angle), distance * math.sin(angle)), base.wobble)
            if clear(candidate):
                base = candidate
                break
        clouds.append(base)
    for _ in range(count):
        for _attempt in range(100):
            r = float(rng.uniform(*radius))
            kind = str(rng.choice(kinds))
            distance = 0.0 if kind == "cirrus" else r * float(rng.uniform(0.5, 1.0))
            cloud = Cloud(float(rng.uniform(0, width)), float(rng.uniform(0, height)), r, kind,
                          (distance * math.cos(sun), distance * math.sin(sun)), _wobble(rng))
            if clear(cloud):
                clouds.append(cloud)
                break
    return Clouds(tuple(clouds), int(width), int(height))


def cloud_masks(clouds: Clouds, rows: np.ndarray, cols: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per kind, the points (``rows`` x ``cols``, px coordinates of centres) in a cloud of that kind; and those in a shadow."""
    shape = (len(rows), len(cols))
    kinds = {kind: np.zeros(shape, bool) for kind in KINDS}
    shadow = np.zeros(shape, bool)
    for cloud in clouds:
        for is_shadow, target in ((False, kinds[cloud.kind]), (True, shadow)):
            if is_shadow and not cloud.casts_shadow:
                continue
            x0, y0, x1, y1 = cloud.extent(is_shadow)
            i0, i1 = np.searchsorted(rows, [y0, y1])
            j0, j1 = np.searchsorted(cols, [x0, x1])
            if i0 >= i1 or j0 >= j1:
                continue
            target[i0:i1, j0:j1] |= cloud.contains(cols[None, j0:j1], rows[i0:i1, None], is_shadow)
    return kinds, shadow


def scl_layer(clouds: Clouds, width: int | None = None, height: int | None = None, *, factor: int = 2,
              base: np.ndarray | None = None, nodata: np.ndarray | None = None) -> np.ndarray:
    """The SCL (uint8 [ceil(height / factor), ceil(width / factor)]) of a scene under ``clouds``.

    Clear cells hold ``base`` (a uint8 class map of that shape, e.g.
    :func:`minescan.synthetic.mining.scl_classes`), else 4 (vegetation);
    cloud cells 9 (high) / 8 (medium) / 10 (cirrus), a cell in several
    clouds taking the highest of high > medium > cirrus; shadow cells
    (in a shadow, in no cloud) 3; ``nodata`` cells 0.  ``nodata`` is bool
    at the SCL's shape, or at the scene's (then a cell is nodata when all
    its scene pixels are).  The cell rule is the module docstring's.
    """
    width = clouds.width if width is None else width
    height = clouds.height if height is None else height
    rows_n, cols_n = -(-height // factor), -(-width // factor)
    if base is None:
        out = np.full((rows_n, cols_n), SCL.VEGETATION, np.uint8)
    else:
        if base.shape != (rows_n, cols_n):
            raise ValueError(f"base classes must be {rows_n} x {cols_n} cells, got {base.shape}")
        out = base.astype(np.uint8, copy=True)
    centres_r = np.arange(rows_n) * factor + factor / 2
    centres_c = np.arange(cols_n) * factor + factor / 2
    kinds, shadow = cloud_masks(clouds, centres_r, centres_c)
    cloudy = kinds["high"] | kinds["medium"] | kinds["cirrus"]
    out[shadow & ~cloudy] = SCL.CLOUD_SHADOW
    for kind in ("cirrus", "medium", "high"):
        out[kinds[kind]] = _SCL_CLASS[kind]
    if nodata is not None:
        nodata = np.asarray(nodata, bool)
        if nodata.shape == (height, width):
            padded = np.ones((rows_n * factor, cols_n * factor), bool)
            padded[:height, :width] = nodata
            nodata = padded.reshape(rows_n, factor, cols_n, factor).all(axis=(1, 3))
        if nodata.shape != (rows_n, cols_n):
            raise ValueError(f"nodata must be {rows_n} x {cols_n} cells or {height} x {width} px, got {nodata.shape}")
        out[nodata] = SCL.NO_DATA
    return out


def apply_clouds(dn: np.ndarray, clouds: Clouds, top: int) -> np.ndarray:
    """Strip ``dn`` (uint16 [rows, width, bands], DN = reflectance x 10000, rows ``top ..``) as seen under ``clouds``.

    Returns a new array; DN 0 (nodata) stays 0.  See the module docstring for the brightness of each kind.
    """
    rows = np.arange(top, top + dn.shape[0]) + 0.5
    cols = np.arange(dn.shape[1]) + 0.5
    kinds, shadow = cloud_masks(clouds, rows, cols)
    cloudy = kinds["high"] | kinds["medium"] | kinds["cirrus"]
    if not (cloudy.any() or shadow.any()):
        return dn.copy()
    reflectance = dn.astype(np.float32) / 10000
    texture = (0.5 + 0.25 * np.sin(rows[:, None] / 23.0 + np.cos(cols[None, :] / 31.0))
               + 0.25 * np.sin(cols[None, :] / 17.0 - rows[:, None] / 41.0)).astype(np.float32)  # 0..1, smooth
    shade = shadow & ~cloudy
    reflectance[shade] *= 0.5
    reflectance[kinds["cirrus"]] += 0.06
    medium = kinds["medium"]
    reflectance[medium] = 0.7 * 0.32 + 0.3 * reflectance[medium]
    high = kinds["high"]
    reflectance[high] = (0.5 + 0.08 * texture[high])[:, None]
    out = dn.copy()
    touched = (cloudy | shade)[..., None] & (dn != 0)  # the rest keeps its DN exactly (no float round trip)
    out[touched] = np.clip(reflectance * 10000, 1, 65535).astype(np.uint16)[touched]
    return out
