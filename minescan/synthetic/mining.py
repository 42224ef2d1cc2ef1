"""Sentinel-2-like scenes of a mining region, with the mining sites' truth.

A scene is a 4-band uint16 L2A-like GeoTIFF (B02, B03, B04, B08, DN =
reflectance x 10000, nodata 0) in a UTM CRS at 10 m, like
:mod:`minescan.synthetic.scene`, but drawn from *materials* rather than flat
rectangles, so a detector has to learn shapes and context:

* the background is farmland (field patches of crops, grass, sparse cover and
  bare soil), forest stands, lakes, meandering rivers and straight roads, with
  smooth brightness variation and pixel noise;
* ``illegal_mining`` (class 1) is a cluster of small irregular pits in bare
  soil, many flooded with turbid or turquoise water, 20-60 px across and
  usually on a river bank (artisanal gold mining follows the alluvium);
* ``legal_mining`` (class 2) is one large regular open pit with concentric
  benches around a pit lake, a haul road and a tailings pond behind a dam,
  60-120 px across;
* look-alike *distractors*, not in the truth: bare fields with plough lines,
  quarries (bright rock, no pits, no benches, no ponds) and urban blocks.

Everything comes from one seed.  :func:`plan_scene` decides the layout (each
site as a small material map at a known place); :func:`write_mining_scene`
renders it strip by strip (``strip`` rows at a time), so even a full
10980 x 10980 px scene needs a few hundred MB at most.  A site's truth box is
the bounding box of its drawn pixels, exact in the pixel-corner convention.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from minescan.synthetic.scene import BANDS, Truth, _upsample
from minescan.results.writers import write_detections
from minescan.scan.stitch import SceneDetections

MINING_LABELS = {1: "illegal_mining", 2: "legal_mining"}
DISTRACTOR_KINDS = ("bare_field", "quarry", "urban")

# Reflectance (B02, B03, B04, B08) of every material a scene is drawn from.
_MATERIALS: dict[str, tuple[float, float, float, float]] = {
    "forest": (0.020, 0.040, 0.022, 0.34),
    "crop": (0.035, 0.065, 0.045, 0.38),
    "grass": (0.045, 0.075, 0.065, 0.28),
    "sparse": (0.060, 0.085, 0.100, 0.24),
    "soil": (0.085, 0.115, 0.155, 0.22),
    "soil_dark": (0.065, 0.090, 0.120, 0.19),
    "water": (0.035, 0.045, 0.025, 0.012),
    "road": (0.090, 0.110, 0.140, 0.17),
    "pit_soil": (0.140, 0.170, 0.220, 0.25),  # freshly dug, wet alluvium
    "pond_turquoise": (0.090, 0.135, 0.085, 0.040),
    "pond_turbid": (0.085, 0.120, 0.135, 0.065),
    "spoil": (0.110, 0.135, 0.170, 0.21),
    "bench_light": (0.200, 0.215, 0.235, 0.27),
    "bench_shadow": (0.090, 0.100, 0.115, 0.14),
    "pit_lake": (0.040, 0.075, 0.050, 0.020),
    "haul_road": (0.170, 0.185, 0.200, 0.23),
    "tailings": (0.150, 0.165, 0.160, 0.17),
    "dam": (0.120, 0.130, 0.150, 0.19),
    "quarry_rock": (0.210, 0.225, 0.240, 0.28),
    "quarry_dust": (0.160, 0.175, 0.190, 0.23),
    "roof_red": (0.080, 0.095, 0.170, 0.20),
    "roof_grey": (0.150, 0.160, 0.170, 0.19),
    "street": (0.070, 0.080, 0.090, 0.11),
}
_M = {name: index for index, name in enumerate(_MATERIALS)}
_REFLECTANCE = np.array(list(_MATERIALS.values()), np.float32)
CLEAR = 255  # "background shows through" in a site's material map

_FIELD_COVERS = np.array([_M["crop"], _M["crop"], _M["grass"], _M["sparse"], _M["soil"]], np.uint8)
_FIELD_CELL = 32  # field patches are 32 px (320 m) squares
_VARIATION_CELL = 48
_FOREST_CELL = 256
_LAKE_CELL = 160
_OCCUPANCY_CELL = 8  # sites keep >= one 8 px cell apart


@dataclass(frozen=True)
class MiningSpec:
    """What to generate: size, seed, site densities (per 1000 x 1000 px = 100 km2), CRS, strip height.

    A site that finds no free place in 50 tries is left out, so very high
    densities give fewer sites than asked for.
    """

    width: int = 2048
    height: int = 2048
    seed: int = 0
    illegal_density: float = 3.0
    legal_density: float = 1.0
    distractor_density: float = 6.0
    river_along_fraction: float = 0.6  # illegal clusters placed on a river bank
    epsg: int = 32630
    origin: tuple[float, float] = (600000.0, 800000.0)
    pixel_size: float = 10.0
    strip: int = 512

    def __post_init__(self) -> None:
        if self.width < 128 or self.height < 128:
            raise ValueError(f"a mining scene needs at least 128 x 128 px, got {self.width} x {self.height}")
        if min(self.illegal_density, self.legal_density, self.distractor_density) < 0:
            raise ValueError("site densities must be >= 0")
        if self.strip < 1:
            raise ValueError(f"strip must be >= 1 row, got {self.strip}")

    @property
    def transform(self) -> Affine:
        """Pixel corner to map coordinates."""
        return from_origin(*self.origin, self.pixel_size, self.pixel_size)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def count(self, density: float) -> int:
        """How many sites ``density`` per 1000 x 1000 px means for this scene."""
        return int(round(density * self.width * self.height / 1e6))


@dataclass(frozen=True)
class Site:
    """A drawn object: ``materials`` (uint8 [h, w], :data:`CLEAR` outside it) with its top-left at ``col, row``.

    ``class_id`` is 1 or 2 for mining sites and 0 for distractors.
    """

    kind: str
    class_id: int
    col: int
    row: int
    materials: np.ndarray

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), pixel corners."""
        h, w = self.materials.shape
        return self.col, self.row, self.col + w, self.row + h


@dataclass(frozen=True)
class River:
    """A meandering river: its centre line is ``cross = base + sum(a sin(2 pi t / L + phi))`` along ``t``."""

    vertical: bool  # runs top to bottom (t = row, cross = col), else left to right
    base: float
    width: float
    waves: tuple[tuple[float, float, float], ...]  # (amplitude, wavelength, phase)

    def centre(self, t: np.ndarray) -> np.ndarray:
        return self.base + sum(a * np.sin(2 * np.pi * t / length + phase) for a, length, phase in self.waves)

    def mask(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Water pixels [rows, cols]."""
        if self.vertical:
            return np.abs(cols[None, :] - self.centre(rows)[:, None]) < self.width / 2
        return np.abs(rows[:, None] - self.centre(cols)[None, :]) < self.width / 2


@dataclass(frozen=True)
class Road:
    """A straight road through ``(col, row)`` at ``angle`` radians."""

    col: float
    row: float
    angle: float
    width: float

    def mask(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        distance = -math.sin(self.angle) * (cols[None, :] - self.col) + math.cos(self.angle) * (rows[:, None] - self.row)
        return np.abs(distance) < self.width / 2


@dataclass(frozen=True)
class Layout:
    """Everything a scene shows, decided before any pixel is drawn."""

    spec: MiningSpec
    sites: tuple[Site, ...]
    rivers: tuple[River, ...]
    roads: tuple[Road, ...]
    fields: np.ndarray  # material per 32 px field cell
    forest: np.ndarray  # coarse grids, upsampled per strip
    lakes: np.ndarray
    variation: np.ndarray

    def truth(self) -> Truth:
        """The mining sites (not the distractors) as pixel boxes and classes."""
        mines = [s for s in self.sites if s.class_id]
        return Truth.of([s.box for s in mines], [s.class_id for s in mines]) if mines else Truth.of([])

    def distractors(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if not s.class_id)


# --- site drawings ------------------------------------------------------------------------------


def _polar(h: int, w: int, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance and angle of every pixel centre of an h x w map from (cy, cx)."""
    y, x = np.mgrid[0:h, 0:w] + 0.5
    return np.hypot(y - cy, x - cx), np.arctan2(y - cy, x - cx)


def _blob(h: int, w: int, cy: float, cx: float, radius: float, rng: np.random.Generator, wobble: float = 0.3) -> np.ndarray:
    """An irregular disc: its radius varies with angle by up to ``wobble``."""
    distance, angle = _polar(h, w, cy, cx)
    a1, a2 = rng.uniform(0, wobble, 2)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    edge = radius * (1 + a1 * np.sin(2 * angle + p1) + a2 * np.sin(3 * angle + p2))
    return distance < edge


def _cropped(materials: np.ndarray) -> np.ndarray:
    """The map cut to its drawn pixels' bounding box (so the truth box is exact)."""
    rows, cols = np.nonzero(materials != CLEAR)
    return materials[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].copy()


def draw_illegal_cluster(rng: np.random.Generator) -> np.ndarray:
    """Small irregular pits, about half of them flooded (turbid or turquoise), in one patch of cleared, dug-over soil."""
    h, w = (int(v) for v in rng.integers(20, 61, 2))
    y, x = np.mgrid[0:h, 0:w] + 0.5
    angle = np.arctan2(y - h / 2, x - w / 2)
    wobble = 1 + sum(rng.uniform(0, 0.12) * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    patch = np.hypot((y - h / 2) / (h / 2), (x - w / 2) / (w / 2)) < 0.85 * wobble
    canvas = np.where(patch, _M["spoil"], CLEAR).astype(np.uint8)
    inside = np.argwhere(patch)
    for _ in range(max(4, h * w // 150)):
        cy, cx = inside[rng.integers(len(inside))] + 0.5
        radius = float(rng.uniform(2.0, 6.0))
        pit = _blob(h, w, cy, cx, radius, rng) & patch
        canvas[pit] = _M["pit_soil"]
        if rng.random() < 0.55:
            canvas[_blob(h, w, cy, cx, max(1.5, radius - 1.5), rng) & pit] = _M["pond_turquoise"] if rng.random() < 0.5 else _M["pond_turbid"]
    return _cropped(canvas)


def _thick_line(h: int, w: int, start: tuple[float, float], end: tuple[float, float], width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment start-end, points as (row, col)."""
    y, x = np.mgrid[0:h, 0:w] + 0.5
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
    return np.hypot(y - (y0 + t * dy), x - (x0 + t * dx)) < width / 2


def draw_legal_mine(rng: np.random.Generator) -> np.ndarray:
    """A regular open pit (benches around a lake), a haul road and a dammed tailings pond beside it."""
    a, b = (float(v) for v in rng.uniform(20, 38, 2))  # pit half-width, half-height
    tail_w, tail_h = (float(v) for v in rng.uniform(18, 36, 2))
    gap = float(rng.uniform(4, 8))
    horizontal = rng.random() < 0.5  # tailings beside the pit (left/right) or above/below it
    size = int(np.ceil(2 * max(a, b) + gap + max(tail_w, tail_h))) + 2
    canvas = np.full((size, size), CLEAR, np.uint8)
    cy = cx = size / 2
    flip = rng.random() < 0.5
    if horizontal:
        cx = size - a - 1 if flip else a + 1
        ty, tx = cy, (cx - a - gap - tail_w / 2) if flip else (cx + a + gap + tail_w / 2)
    else:
        cy = size - b - 1 if flip else b + 1
        ty, tx = (cy - b - gap - tail_h / 2) if flip else (cy + b + gap + tail_h / 2), cx
    y, x = np.mgrid[0:size, 0:size] + 0.5
    rho = (np.abs((y - cy) / b) ** 4 + np.abs((x - cx) / a) ** 4) ** 0.25  # rounded rectangle, 1 at the rim
    bench = float(rng.uniform(3.0, 4.5)) / min(a, b)  # bench width as a fraction of the pit radius
    inside = rho < 1
    canvas[inside] = np.where(((1 - rho[inside]) / bench).astype(int) % 2 == 0, _M["bench_light"], _M["bench_shadow"])
    canvas[rho < float(rng.uniform(0.2, 0.35))] = _M["pit_lake"]
    canvas[_thick_line(size, size, (cy, cx), (ty, tx), 3.0) & (rho > 0.45)] = _M["haul_road"]
    tailings = (np.abs(y - ty) < tail_h / 2) & (np.abs(x - tx) < tail_w / 2)
    canvas[tailings] = _M["dam"]
    canvas[(np.abs(y - ty) < tail_h / 2 - 2) & (np.abs(x - tx) < tail_w / 2 - 2)] = _M["tailings"]
    return _cropped(canvas)


def draw_bare_field(rng: np.random.Generator) -> np.ndarray:
    """A ploughed field: bare soil in alternating 2 px furrows."""
    h, w = (int(v) for v in rng.integers(20, 101, 2))
    y, x = np.mgrid[0:h, 0:w]
    furrows = (y if rng.random() < 0.5 else x) // 2 % 2
    return np.where(furrows == 0, _M["soil"], _M["soil_dark"]).astype(np.uint8)


def draw_quarry(rng: np.random.Generator) -> np.ndarray:
    """An irregular bright rock face with a dusty margin: no pits, no benches, no water."""
    side = int(rng.integers(24, 71))
    canvas = np.full((side, side), CLEAR, np.uint8)
    centre = side / 2
    canvas[_blob(side, side, centre, centre, side / 2 - 1, rng, wobble=0.15)] = _M["quarry_dust"]
    canvas[_blob(side, side, centre, centre, side / 2 - 5, rng, wobble=0.15)] = _M["quarry_rock"]
    return _cropped(canvas)


def draw_urban(rng: np.random.Generator) -> np.ndarray:
    """Blocks of red and grey roofs and some green, between 2 px streets."""
    h, w = (int(v) for v in rng.integers(30, 101, 2))
    block = int(rng.integers(6, 11))
    canvas = np.full((h, w), _M["street"], np.uint8)
    for top in range(0, h, block + 2):
        for left in range(0, w, block + 2):
            canvas[top : top + block, left : left + block] = rng.choice([_M["roof_red"], _M["roof_grey"], _M["grass"]], p=[0.45, 0.4, 0.15])
    return canvas


_DRAW = {"bare_field": draw_bare_field, "quarry": draw_quarry, "urban": draw_urban}


# --- layout ---------------------------------------------------------------------------------------


class _Occupancy:
    """Coarse cells taken by placed sites, so sites never touch."""

    def __init__(self, spec: MiningSpec) -> None:
        self.spec = spec
        self.cells = np.zeros((spec.height // _OCCUPANCY_CELL + 2, spec.width // _OCCUPANCY_CELL + 2), bool)

    def take(self, materials: np.ndarray, col: int, row: int) -> bool:
        """Claim the box (plus one cell around it) if it lies inside the scene and is free."""
        h, w = materials.shape
        if col < 0 or row < 0 or col + w > self.spec.width or row + h > self.spec.height:
            return False
        c = _OCCUPANCY_CELL
        window = np.s_[max(0, row // c - 1) : (row + h) // c + 2, max(0, col // c - 1) : (col + w) // c + 2]
        if self.cells[window].any():
            return False
        self.cells[window] = True
        return True


def _rivers(spec: MiningSpec, rng: np.random.Generator) -> tuple[River, ...]:
    count = max(1, round(spec.width * spec.height / 16e6))
    rivers = []
    for _ in range(count):
        vertical = bool(rng.random() < 0.5)
        across, along = (spec.width, spec.height) if vertical else (spec.height, spec.width)
        waves = tuple(
            (float(rng.uniform(0.02, 0.06) * across), float(rng.uniform(0.3, 1.2) * along), float(rng.uniform(0, 2 * np.pi)))
            for _ in range(2)
        )
        rivers.append(River(vertical, float(rng.uniform(0.2, 0.8) * across), float(rng.uniform(5, 12)), waves))
    return tuple(rivers)


def _roads(spec: MiningSpec, rng: np.random.Generator) -> tuple[Road, ...]:
    count = max(2, round(spec.width * spec.height / 5e6))
    return tuple(
        Road(float(rng.uniform(0, spec.width)), float(rng.uniform(0, spec.height)), float(rng.uniform(0, np.pi)), float(rng.uniform(2, 3.5)))
        for _ in range(count)
    )


def plan_scene(spec: MiningSpec) -> Layout:
    """Decide where everything goes; the same ``spec`` always gives the same layout."""
    rng = np.random.default_rng(spec.seed)
    rivers = _rivers(spec, rng)
    occupancy = _Occupancy(spec)
    sites: list[Site] = []
    wanted = [("legal_mining", 2, spec.count(spec.legal_density)), ("illegal_mining", 1, spec.count(spec.illegal_density))]
    kinds = rng.choice(DISTRACTOR_KINDS, spec.count(spec.distractor_density))
    wanted += [(str(kind), 0, int(np.sum(kinds == kind))) for kind in DISTRACTOR_KINDS]
    for kind, class_id, count in wanted:
        draw = {"legal_mining": draw_legal_mine, "illegal_mining": draw_illegal_cluster, **_DRAW}[kind]
        for _ in range(count):
            materials = draw(rng)
            for _attempt in range(50):
                if class_id == 1 and rng.random() < spec.river_along_fraction:
                    col, row = _bank_position(materials, rivers[int(rng.integers(len(rivers)))], spec, rng)
                else:
                    col = int(rng.integers(0, spec.width - materials.shape[1] + 1))
                    row = int(rng.integers(0, spec.height - materials.shape[0] + 1))
                if occupancy.take(materials, col, row):
                    sites.append(Site(kind, class_id, col, row, materials))
                    break
    return Layout(
        spec=spec,
        sites=tuple(sites),
        rivers=rivers,
        roads=_roads(spec, rng),
        **ground(spec, rng),
    )


def ground(spec: MiningSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The land-cover grids of a layout (fields, forest, lakes, variation), drawn from ``rng`` in that order."""
    return dict(
        fields=rng.choice(_FIELD_COVERS, (spec.height // _FIELD_CELL + 1, spec.width // _FIELD_CELL + 1)),
        forest=rng.random((spec.height // _FOREST_CELL + 2, spec.width // _FOREST_CELL + 2), np.float32),
        lakes=rng.random((spec.height // _LAKE_CELL + 2, spec.width // _LAKE_CELL + 2), np.float32),
        variation=rng.random((spec.height // _VARIATION_CELL + 2, spec.width // _VARIATION_CELL + 2), np.float32),
    )


def _bank_position(materials: np.ndarray, river: River, spec: MiningSpec, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left of a site whose near edge lies 1-6 px off a random point of ``river``'s bank."""
    h, w = materials.shape
    t = float(rng.uniform(0, spec.height if river.vertical else spec.width))
    side = 1 if rng.random() < 0.5 else -1
    bank = float(river.centre(np.array([t]))[0]) + side * (river.width / 2 + float(rng.uniform(1, 6)))
    near = int(round(bank)) if side > 0 else int(round(bank)) - (w if river.vertical else h)
    return (near, int(t - h / 2)) if river.vertical else (int(t - w / 2), near)


# --- rendering ------------------------------------------------------------------------------------


def _strip_materials(layout: Layout, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Material index [rows, cols] of the background and every site crossing these rows."""
    out = layout.fields[rows // _FIELD_CELL][:, cols // _FIELD_CELL]
    out[_upsample(layout.forest, rows, cols, _FOREST_CELL) > 0.62] = _M["forest"]
    out[_upsample(layout.lakes, rows, cols, _LAKE_CELL) > 0.9] = _M["water"]
    for road in layout.roads:
        out[road.mask(rows, cols)] = _M["road"]
    for river in layout.rivers:
        out[river.mask(rows, cols)] = _M["water"]
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    for site in layout.sites:
        x0, y0, x1, y1 = site.box
        if y1 <= top or y0 >= bottom:
            continue
        part = site.materials[max(top, y0) - y0 : min(bottom, y1) - y0]
        target = out[max(top, y0) - top : min(bottom, y1) - top, x0:x1]
        drawn = part != CLEAR
        target[drawn] = part[drawn]
    return out


def render_strip(layout: Layout, top: int, height: int) -> np.ndarray:
    """uint16 DN [height, width, 4] of rows ``top .. top + height``: materials, brightness variation, noise."""
    spec = layout.spec
    rows, cols = np.arange(top, top + height), np.arange(spec.width)
    reflectance = _REFLECTANCE[_strip_materials(layout, rows, cols)]
    reflectance *= (0.85 + 0.3 * _upsample(layout.variation, rows, cols, _VARIATION_CELL))[..., None]
    noise = np.random.default_rng([spec.seed, top]).normal(0, 0.004, reflectance.shape).astype(np.float32)
    reflectance += noise
    return np.clip(reflectance * 10000, 1, 65535).astype(np.uint16)


def write_mining_scene(path: str | os.PathLike[str], spec: MiningSpec = MiningSpec()) -> Layout:
    """Generate the scene of ``spec`` at ``path`` (tiled, DEFLATE GeoTIFF), strip by strip; return its layout."""
    layout = plan_scene(spec)
    write_layout(path, layout)
    return layout


def write_layout(path: str | os.PathLike[str], layout: Layout, clouds=None) -> None:
    """Render ``layout`` strip by strip into a 4-band (B02, B03, B04, B08) uint16 tiled DEFLATE GeoTIFF at ``path``.

    ``clouds`` (:class:`minescan.synthetic.clouds.Clouds`) are drawn over each
    strip by :func:`minescan.synthetic.clouds.apply_clouds`; without them the
    output is the plain scene, byte for byte.
    """
    if clouds is not None:
        from minescan.synthetic.clouds import apply_clouds
    spec = layout.spec
    profile = dict(
        driver="GTiff", width=spec.width, height=spec.height, count=len(BANDS), dtype="uint16", nodata=0,
        crs=spec.crs, transform=spec.transform, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BANDS
        for top in range(0, spec.height, spec.strip):
            strip = render_strip(layout, top, min(spec.strip, spec.height - top))
            if clouds is not None:
                strip = apply_clouds(strip, clouds, top)
            dst.write(np.moveaxis(strip, -1, 0), window=Window(0, top, spec.width, strip.shape[0]))


# SCL class of each material (minescan.quality.scl): 4 vegetation, 5 not vegetated, 6 water.
_SCL_OF_MATERIAL = np.array(
    [6 if name in ("water", "pond_turquoise", "pond_turbid", "pit_lake") else 4 if name in ("forest", "crop", "grass", "sparse") else 5
     for name in _MATERIALS],
    np.uint8,
)


def scl_classes(layout: Layout, factor: int = 2) -> np.ndarray:
    """The clear-sky SCL of ``layout`` (uint8 [ceil(H / factor), ceil(W / factor)]): 4, 5 or 6 per cell.

    A cell takes the class of the material of its top-left scene pixel
    (vegetation for forest, crops, grass, sparse cover; water for rivers,
    lakes, ponds, pit lakes; not vegetated for the rest).
    """
    spec = layout.spec
    cols = np.arange(spec.width)
    step = max(factor, spec.strip // factor * factor)  # strips start on cell rows
    parts = []
    for top in range(0, spec.height, step):
        rows = np.arange(top, min(top + step, spec.height))
        parts.append(_SCL_OF_MATERIAL[_strip_materials(layout, rows, cols)[::factor, ::factor]])
    return np.concatenate(parts)


def write_truth(path: str | os.PathLike[str], layout: Layout, scene: str = "scene.tif") -> Path:
    """Write the layout's mining sites as a result file (score 1), GeoJSON or GeoPackage by extension."""
    truth = layout.truth()
    detections = SceneDetections(truth.boxes, np.ones(len(truth.classes)), truth.classes)
    spec = layout.spec
    return write_detections(path, detections, transform=spec.transform, crs=spec.crs, labels=MINING_LABELS, scene=scene)
