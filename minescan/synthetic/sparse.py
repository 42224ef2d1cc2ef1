"""A realistic benchmark scene: a full Sentinel-2 tile where mining is rare and clustered.

The demo's mining scenes (:mod:`minescan.synthetic.mining`) spread sites
evenly, so nearly every tile holds one; real tiles are mostly farmland, forest,
towns and rivers, with mining concentrated in a few districts.  This scene
keeps the demo's materials, drawings and renderer (so the shipped demo models
see what they were trained on) but lays it out sparsely:

* mining sites (illegal clusters, most on the bank of a river that runs through
  the district, and legal open pits) lie only inside a few *districts*; each
  district is the core of a ``district_tiles`` x ``district_tiles`` block of
  the scan's tile grid (640 px tiles, overlap 128), the area only those tiles
  cover, so the tiles that see mining are known before a pixel is drawn;
* the number of districts is cut so that at most ``max_mining_share`` (5 %)
  of the grid's tiles contain any mining, and every placed site is checked
  against that budget as well;
* look-alikes (bare fields, quarries, urban blocks) are spread over the rest
  of the scene at the demo's density, with the demo's rivers, lakes, forest
  and roads everywhere.

:func:`plan_sparse` returns a :class:`minescan.synthetic.mining.Layout`, so
:func:`~minescan.synthetic.mining.render_strip` and
:func:`~minescan.synthetic.mining.write_truth` work on it unchanged;
:func:`write_sparse_scene` writes the GeoTIFF (strip by strip, bounded
memory) and the truth GeoJSON; ``testkit.products.write_safe_from_raster``
writes the same pixels as an L2A ``.SAFE`` product with 1024 px-tiled
lossless JPEG 2000 bands, as real products have.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minescan.raster.grid import axis_starts
from minescan.synthetic.mining import (
    _DRAW,
    DISTRACTOR_KINDS,
    Layout,
    MiningSpec,
    River,
    Site,
    _Occupancy,
    _rivers,
    _roads,
    draw_illegal_cluster,
    draw_legal_mine,
    ground,
    write_layout,
    write_truth,
)

FULL_SIZE = 10980  # a Sentinel-2 tile at 10 m


@dataclass(frozen=True)
class SparseSpec:
    """A square scene of ``size`` px where mining sites cluster in ``districts`` districts.

    ``illegal_per_district``/``legal_per_district`` are wanted per 2 x 2-tile
    district (scaled by area for smaller ones); a site that finds no free
    place inside its district in 200 tries is left out.  ``tile``/``overlap``
    is the scan grid the 5 % budget is counted on.
    """

    size: int = FULL_SIZE
    seed: int = 0
    districts: int = 3
    district_tiles: int = 2
    illegal_per_district: int = 12
    legal_per_district: int = 3
    distractor_density: float = 8.0  # per 1000 x 1000 px, outside the districts
    max_mining_share: float = 0.05
    tile: int = 640
    overlap: int = 128
    epsg: int = 32630
    origin: tuple[float, float] = (600000.0, 800040.0)
    strip: int = 512

    def __post_init__(self) -> None:
        if self.size < 2 * self.tile:
            raise ValueError(f"a sparse scene needs at least {2 * self.tile} px, got {self.size}")
        if self.districts < 1 or self.district_tiles < 1:
            raise ValueError("districts and district_tiles must be >= 1")
        if not 0 < self.max_mining_share <= 1:
            raise ValueError(f"max_mining_share must be in (0, 1], got {self.max_mining_share}")

    def mining_spec(self) -> MiningSpec:
        """The demo scene spec this scene renders with (background, CRS, noise seed)."""
        return MiningSpec(width=self.size, height=self.size, seed=self.seed, illegal_density=0.0, legal_density=0.0,
                          distractor_density=self.distractor_density, epsg=self.epsg, origin=self.origin,
                          strip=self.strip)

    @property
    def tile_starts(self) -> list[int]:
        return axis_starts(self.size, self.tile, self.overlap)

    @property
    def tiles(self) -> int:
        return len(self.tile_starts) ** 2

    @property
    def tile_budget(self) -> int:
        """The most tiles that may contain mining."""
        return int(math.floor(self.max_mining_share * self.tiles + 1e-9))


@dataclass(frozen=True)
class District:
    """A mining district: pixel box (x0, y0, x1, y1) only covered by the tiles ``cols`` x ``rows`` of the grid."""

    box: tuple[int, int, int, int]
    cols: tuple[int, ...]
    rows: tuple[int, ...]


def tiles_touched(spec: SparseSpec, box: tuple[int, int, int, int]) -> set[tuple[int, int]]:
    """(row, col) indexes of the grid tiles a pixel box (x0, y0, x1, y1) overlaps."""
    starts = spec.tile_starts
    x0, y0, x1, y1 = box
    cols = [i for i, s in enumerate(starts) if s < x1 and s + spec.tile > x0]
    rows = [i for i, s in enumerate(starts) if s < y1 and s + spec.tile > y0]
    return {(r, c) for r in rows for c in cols}


def mining_tiles(spec: SparseSpec, boxes: np.ndarray) -> set[tuple[int, int]]:
    """Every grid tile that overlaps one of ``boxes`` ([n, 4] pixel boxes)."""
    touched: set[tuple[int, int]] = set()
    for box in np.asarray(boxes).reshape(-1, 4):
        touched |= tiles_touched(spec, tuple(int(v) for v in box))
    return touched


def _core(starts: list[int], first: int, count: int, tile: int) -> tuple[int, int] | None:
    """Pixel span covered only by tiles ``first .. first + count - 1`` of one axis (None if empty)."""
    low = starts[first - 1] + tile if first > 0 else 0
    last = first + count - 1
    high = starts[last + 1] if last + 1 < len(starts) else starts[last] + tile
    return (low, high) if high - low >= 64 else None


def _districts(spec: SparseSpec, rng: np.random.Generator) -> tuple[District, ...]:
    """Up to ``spec.districts`` non-adjacent districts whose tiles fit the budget (smaller blocks when they must)."""
    if spec.tile_budget < 1:
        raise ValueError(f"a {spec.size} px scene has {spec.tiles} tiles; {spec.max_mining_share:.0%} of them is less than one")
    starts = spec.tile_starts
    n = len(starts)
    size = min(spec.district_tiles, n)
    while size > 1 and size * size > spec.tile_budget:
        size -= 1
    wanted = min(spec.districts, spec.tile_budget // (size * size))
    # Any block of the grid, in random order; districts keep a tile apart.
    candidates = [(r, c) for r in range(n - size + 1) for c in range(n - size + 1)]
    rng.shuffle(candidates)
    chosen: list[District] = []
    used: set[tuple[int, int]] = set()
    for r, c in candidates:
        if len(chosen) == wanted:
            break
        block = {(r + i, c + j) for i in range(size) for j in range(size)}
        ring = {(r + i, c + j) for i in range(-1, size + 1) for j in range(-1, size + 1)}
        if ring & used:
            continue
        xs, ys = _core(starts, c, size, spec.tile), _core(starts, r, size, spec.tile)
        if xs is None or ys is None:
            continue
        box = (xs[0], ys[0], xs[1], ys[1])
        if tiles_touched(spec, (box[0], box[1], box[2], box[3])) != block:
            continue
        used |= block
        chosen.append(District(box, tuple(range(c, c + size)), tuple(range(r, r + size))))
    return tuple(chosen)


def _district_river(district: District, scene: int, rng: np.random.Generator) -> River:
    """A meandering river that runs through the middle of ``district`` (and on across the scene)."""
    x0, y0, x1, y1 = district.box
    vertical = bool(rng.random() < 0.5)
    across = (x1 - x0) if vertical else (y1 - y0)
    waves = tuple((float(rng.uniform(0.05, 0.12) * across), float(rng.uniform(0.3, 0.8) * scene), float(rng.uniform(0, 2 * np.pi)))
                  for _ in range(2))
    mid_t = (y0 + y1) / 2 if vertical else (x0 + x1) / 2
    mid_cross = (x0 + x1) / 2 if vertical else (y0 + y1) / 2
    wave_at_mid = sum(a * math.sin(2 * math.pi * mid_t / length + phase) for a, length, phase in waves)
    return River(vertical, float(mid_cross - wave_at_mid + rng.uniform(-0.1, 0.1) * across), float(rng.uniform(6, 12)), waves)


def _inside(box: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return box[0] >= outer[0] and box[1] >= outer[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _bank_in(materials: np.ndarray, river: River, district: District, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left of a site whose near edge lies 1-6 px off ``river``'s bank, at a point inside ``district``."""
    h, w = materials.shape
    x0, y0, x1, y1 = district.box
    t = float(rng.uniform(y0, y1) if river.vertical else rng.uniform(x0, x1))
    side = 1 if rng.random() < 0.5 else -1
    bank = float(river.centre(np.array([t]))[0]) + side * (river.width / 2 + float(rng.uniform(1, 6)))
    near = int(round(bank)) if side > 0 else int(round(bank)) - (w if river.vertical else h)
    return (near, int(t - h / 2)) if river.vertical else (int(t - w / 2), near)


def plan_sparse(spec: SparseSpec = SparseSpec()) -> Layout:
    """Decide where everything goes; the same ``spec`` always gives the same layout.

    Raises ``RuntimeError`` if the drawn mining would touch more tiles than
    the budget (it cannot by construction; the check keeps it so).
    """
    rng = np.random.default_rng([spec.seed, 5])
    mining = spec.mining_spec()
    districts = _districts(spec, rng)
    district_rivers = tuple(_district_river(d, spec.size, rng) for d in districts)
    rivers = _rivers(mining, rng) + district_rivers
    occupancy = _Occupancy(mining)
    sites: list[Site] = []
    allowed = set().union(*(set((r, c) for r in d.rows for c in d.cols) for d in districts))
    block_area = (2 * (spec.tile - spec.overlap) - spec.overlap) ** 2  # a 2 x 2 district's core
    for district, river in zip(districts, district_rivers):
        x0, y0, x1, y1 = district.box
        scale = min(1.0, (x1 - x0) * (y1 - y0) / block_area)
        wanted = [("legal_mining", 2, max(1, round(spec.legal_per_district * scale))),
                  ("illegal_mining", 1, max(1, round(spec.illegal_per_district * scale)))]
        for kind, class_id, count in wanted:
            draw = draw_legal_mine if class_id == 2 else draw_illegal_cluster
            for _ in range(count):
                materials = draw(rng)
                h, w = materials.shape
                if w > x1 - x0 or h > y1 - y0:
                    continue
                for _attempt in range(200):
                    if class_id == 1 and rng.random() < mining.river_along_fraction:
                        col, row = _bank_in(materials, river, district, rng)
                    else:
                        col, row = int(rng.integers(x0, x1 - w + 1)), int(rng.integers(y0, y1 - h + 1))
                    box = (col, row, col + w, row + h)
                    if _inside(box, district.box) and tiles_touched(spec, box) <= allowed and occupancy.take(materials, col, row):
                        sites.append(Site(kind, class_id, col, row, materials))
                        break
    # Look-alikes everywhere outside the districts (a margin of 64 px keeps them off the district's edge).
    boxes = [(d.box[0] - 64, d.box[1] - 64, d.box[2] + 64, d.box[3] + 64) for d in districts]
    kinds = rng.choice(DISTRACTOR_KINDS, mining.count(spec.distractor_density))
    for kind in kinds:
        materials = _DRAW[str(kind)](rng)
        h, w = materials.shape
        for _attempt in range(50):
            col, row = int(rng.integers(0, spec.size - w + 1)), int(rng.integers(0, spec.size - h + 1))
            if any(col < b[2] and col + w > b[0] and row < b[3] and row + h > b[1] for b in boxes):
                continue
            if occupancy.take(materials, col, row):
                sites.append(Site(str(kind), 0, col, row, materials))
                break
    layout = Layout(
        spec=mining,
        sites=tuple(sites),
        rivers=rivers,
        roads=_roads(mining, rng),
        **ground(mining, rng),
    )
    touched = mining_tiles(spec, layout.truth().boxes)
    if len(touched) > spec.tile_budget:
        raise RuntimeError(f"mining touches {len(touched)} tiles, over the budget of {spec.tile_budget}")
    return layout


@dataclass(frozen=True)
class SparseScene:
    """What :func:`write_sparse_scene` wrote."""

    spec: SparseSpec
    layout: Layout
    tif: Path
    truth: Path

    @property
    def mining_tiles(self) -> int:
        """Grid tiles that contain mining (at most ``spec.tile_budget``)."""
        return len(mining_tiles(self.spec, self.layout.truth().boxes))


def write_sparse_scene(folder: str | os.PathLike[str], spec: SparseSpec = SparseSpec()) -> SparseScene:
    """Write ``scene.tif`` (4-band uint16 DEFLATE GeoTIFF, strip by strip) and ``truth.geojson`` into ``folder``.

    The same pixels as a Sentinel-2 L2A ``.SAFE`` (1024 px-tiled lossless
    JPEG 2000 bands, baseline 05.10: DN + 1000) come from
    ``testkit.products.write_safe_from_raster(folder, scene.tif)`` (the
    product writers live with the test kit, outside the installed package);
    ``benchmarks/real_speed.py`` writes both.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = plan_sparse(spec)
    tif = folder / "scene.tif"
    write_layout(tif, layout)
    truth = write_truth(folder / "truth.geojson", layout, scene=tif.name)
    return SparseScene(spec, layout, tif, truth)


__all__ = ["FULL_SIZE", "District", "SparseScene", "SparseSpec", "mining_tiles", "plan_sparse", "tiles_touched",
           "write_sparse_scene"]
