"""Two dates of one place: sites that appear, grow, vanish or hide under cloud, with the labels a comparison must give.

A *pair* is the same ground (fields, forest, lakes, rivers, roads, and the
same pixel noise) seen at two dates; only the sites and the clouds differ.
From a base scene (date 1) :func:`plan_pair` (mining scenes,
:mod:`minescan.synthetic.mining`) or :func:`plan_square_pair` (square
scenes, :mod:`minescan.synthetic.scene`, found exactly by
``testkit/square_detector``) derives date 2:

* ``vanished`` mining sites are removed (the ground shows through): ``gone``;
* ``grown`` sites are enlarged 1.5 x each side about their centre (nearest
  neighbour for a mining site's material map), box area >= 2.25 x: ``grown``;
* ``new`` sites appear on free ground (illegal mining, class 1; the third
  one, if any, a legal mine, class 2): ``new``;
* ``clouded`` sites present at both dates lie under a high cloud at date 2:
  ``unknown`` (never ``gone``);
* ``clouded_before`` sites appear at date 2 where a high cloud lay at date 1: ``unknown``;
* every other site: ``unchanged``.

Every site is either entirely under cloud (each 10 m pixel of its box and
each 20 m SCL cell touching it: :func:`minescan.synthetic.clouds.plan_clouds`)
or at least 2 px clear of every cloud and shadow, at both dates, so the
labels are exact.  ``random_clouds`` more clouds per date fall on empty
ground.  Sites keep the mining scenes' >= 8 px gap (square scenes: >= 6 px),
and a new or grown site never overlaps the place of another site at either
date.

:func:`write_pair` writes ``before/<product>.SAFE`` and
``after/<product>.SAFE`` (L2A with the SCL; mining scenes also carry the
clouds in their imagery, square scenes do not: the square detector would
take a white cloud for an object), ``cadastre.gpkg`` (licences around the
legal mines, :mod:`minescan.synthetic.concessions`), ``truth_before.gpkg``,
``truth_after.gpkg`` and ``expected.json`` / ``expected.gpkg`` (the labels).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from minescan.synthetic.clouds import Clouds, covering_radius, plan_clouds, scl_layer
from minescan.synthetic.mining import (
    Layout, MiningSpec, Site, _Occupancy, draw_illegal_cluster, draw_legal_mine, plan_scene,
    scl_classes, write_layout, write_truth,
)
from minescan.synthetic.scene import SceneSpec, Truth, _nodata, _place

LABELS = ("new", "gone", "grown", "unchanged", "unknown")
SQUARE_LABELS = {1: "red_square", 2: "blue_square"}  # as testkit/square_detector.LABELS

Box = tuple[int, int, int, int]
COVER_MARGIN = 12.0  # a covering cloud reaches this far (px) beyond the least that covers its site


@dataclass(frozen=True)
class ExpectedChange:
    """The label a comparison of the two dates must give one site; boxes in scene px (None: absent at that date)."""

    label: str
    class_id: int
    before_box: Box | None
    after_box: Box | None


@dataclass(frozen=True)
class PairSpec:
    """A two-date pair: the base scene (date 1) and how many sites change how (see the module docstring)."""

    base: MiningSpec = MiningSpec(width=1024, height=1024, illegal_density=8.0, legal_density=2.0)
    new: int = 3
    grown: int = 2
    vanished: int = 2
    clouded: int = 1
    clouded_before: int = 1
    random_clouds: int = 2
    dates: tuple[str, str] = ("2026-11-27", "2026-12-04")

    def __post_init__(self) -> None:
        for name in ("new", "grown", "vanished", "clouded", "clouded_before", "random_clouds"):
            if getattr(self, name) < 0:
                raise ValueError(f"PairSpec.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Pair:
    """Two mining layouts of one place, their clouds and the expected labels."""

    spec: PairSpec
    before: Layout
    after: Layout
    clouds_before: Clouds
    clouds_after: Clouds
    expected: tuple[ExpectedChange, ...]


@dataclass(frozen=True)
class SquarePair:
    """Two square scenes of one place (same ``scene`` spec, explicit truths), their clouds and the expected labels."""

    scene: SceneSpec
    before: Truth
    after: Truth
    clouds_before: Clouds
    clouds_after: Clouds
    expected: tuple[ExpectedChange, ...]
    dates: tuple[str, str] = ("2026-11-27", "2026-12-04")


@dataclass(frozen=True)
class PairFiles:
    """What :func:`write_pair` wrote."""

    before: Path
    after: Path
    cadastre: Path
    truth_before: Path
    truth_after: Path
    expected: Path
    concessions: tuple


# --- shared geometry --------------------------------------------------------------------------------


def _near(a, b, margin: float) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _cloud_clear(box, others, width: int, height: int, margin: float = 2.0) -> bool:
    """Whether a covering cloud over ``box`` (its outer radius at the largest wobble) keeps ``margin`` px from ``others``."""
    x0, y0, x1, y1 = box
    r = (covering_radius(box) + COVER_MARGIN) * 1.24  # the largest outer radius (clouds._MAX_WOBBLE)
    extent = ((x0 + x1) / 2 - r, (y0 + y1) / 2 - r, (x0 + x1) / 2 + r, (y0 + y1) / 2 + r)
    return not any(_near(extent, o, margin) for o in others if tuple(o) != tuple(box))


def _clouds(width: int, height: int, seed, over, avoid, count: int) -> Clouds:
    """Covering clouds over ``over`` (shadows and random clouds kept off ``avoid``)."""
    seed = int(np.random.default_rng(seed).integers(2**31))
    return plan_clouds(width, height, seed, over=over, count=count, avoid=avoid, over_margin=COVER_MARGIN)


def _scaled(materials: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """Nearest-neighbour enlargement; the first and last rows/columns stay the edge ones, so the box stays exact."""
    h, w = materials.shape
    h2, w2 = int(math.ceil(h * factor)), int(math.ceil(w * factor))
    return materials[(np.arange(h2) * h) // h2][:, (np.arange(w2) * w) // w2]


def _expected_labels(before_boxes: dict, after_boxes: dict, classes: dict, vanished, grown, new, clouded, clouded_before):
    expected = []
    for key in sorted(set(before_boxes) | set(after_boxes)):
        b, a = before_boxes.get(key), after_boxes.get(key)
        if key in vanished:
            label = "gone"
        elif key in grown:
            label = "grown"
        elif key in clouded or key in clouded_before:
            label = "unknown"
        elif key in new:
            label = "new"
        else:
            label = "unchanged"
        expected.append(ExpectedChange(label, int(classes[key]), None if b is None else tuple(int(v) for v in b),
                                       None if a is None else tuple(int(v) for v in a)))
    return tuple(expected)


# --- mining pairs --------------------------------------------------------------------------------------


def _occupancy(spec: MiningSpec, boxes) -> _Occupancy:
    occupancy = _Occupancy(spec)
    c = 8
    for x0, y0, x1, y1 in boxes:
        occupancy.cells[max(0, y0 // c - 1) : y1 // c + 2, max(0, x0 // c - 1) : x1 // c + 2] = True
    return occupancy


def plan_pair(spec: PairSpec = PairSpec()) -> Pair:
    """The two layouts, clouds and expected labels of ``spec``; the same spec always gives the same pair.

    Asks that cannot be met (too few mining sites in the base scene to
    vanish, grow and cloud; no free ground) raise ValueError naming them.
    """
    base = spec.base
    before = plan_scene(base)
    rng = np.random.default_rng([base.seed, 1919])
    sites = list(before.sites)
    mines = [i for i, s in enumerate(sites) if s.class_id]
    order = [mines[i] for i in rng.permutation(len(mines))]
    if spec.vanished + spec.grown + spec.clouded > len(mines):
        raise ValueError(f"PairSpec asks {spec.vanished} vanished + {spec.grown} grown + {spec.clouded} clouded sites, "
                         f"but the base scene (seed {base.seed}) has {len(mines)} mining sites")
    vanished = set(order[: spec.vanished])
    rest = order[spec.vanished :]
    after_sites: dict[int, Site] = {i: s for i, s in enumerate(sites) if i not in vanished}
    every_box = [s.box for s in sites]  # all places taken at either date

    grown: set[int] = set()
    for i in rest:
        if len(grown) == spec.grown:
            break
        site = sites[i]
        big = _scaled(site.materials)
        h, w = site.materials.shape
        others = [b for j, b in enumerate(every_box) if j != i]
        for col, row in ((site.col + w // 2 - big.shape[1] // 2, site.row + h // 2 - big.shape[0] // 2), (site.col, site.row)):
            if _occupancy(base, others).take(big, col, row):
                after_sites[i] = Site(site.kind, site.class_id, col, row, big)
                every_box.append(after_sites[i].box)
                grown.add(i)
                break
    if len(grown) < spec.grown:
        raise ValueError(f"PairSpec asks {spec.grown} grown sites, only {len(grown)} have room to grow (seed {base.seed})")

    mine_boxes = lambda: [s.box for s in sites if s.class_id] + [s.box for k, s in after_sites.items() if s.class_id]  # noqa: E731
    new: set[int] = set()
    clouded_before: set[int] = set()
    for n in range(spec.new + spec.clouded_before):
        under_cloud = n >= spec.new
        legal = n == 2 and not under_cloud
        for _attempt in range(200):
            materials = draw_legal_mine(rng) if legal else draw_illegal_cluster(rng)
            col = int(rng.integers(0, base.width - materials.shape[1] + 1))
            row = int(rng.integers(0, base.height - materials.shape[0] + 1))
            box = (col, row, col + materials.shape[1], row + materials.shape[0])
            if under_cloud and not _cloud_clear(box, mine_boxes(), base.width, base.height):
                continue
            if _occupancy(base, every_box).take(materials, col, row):
                key = len(sites) + n
                after_sites[key] = Site("legal_mining" if legal else "illegal_mining", 2 if legal else 1, col, row, materials)
                every_box.append(box)
                (clouded_before if under_cloud else new).add(key)
                break
        else:
            raise ValueError(f"no free ground for new site {n + 1} of {spec.new + spec.clouded_before} (seed {base.seed})")
    # a new site placed after a clouded_before one must not sit under that cloud
    for key in sorted(clouded_before):
        if not _cloud_clear(after_sites[key].box, mine_boxes(), base.width, base.height):
            raise ValueError(f"the cloud over new site {after_sites[key].box} would touch another site (seed {base.seed}); "
                             f"try another seed")

    clouded: set[int] = set()
    for i in rest:
        if len(clouded) == spec.clouded:
            break
        if i not in grown and _cloud_clear(sites[i].box, mine_boxes(), base.width, base.height):
            clouded.add(i)
    if len(clouded) < spec.clouded:
        raise ValueError(f"PairSpec asks {spec.clouded} clouded sites, only {len(clouded)} can be clouded alone (seed {base.seed})")

    all_mines = mine_boxes()
    over_before = [after_sites[k].box for k in sorted(clouded_before)]
    over_after = [sites[i].box for i in sorted(clouded)]
    clouds_before = _clouds(base.width, base.height, [base.seed, 1], over_before,
                            [b for b in all_mines if b not in over_before], spec.random_clouds)
    clouds_after = _clouds(base.width, base.height, [base.seed, 2], over_after,
                           [b for b in all_mines if b not in over_after], spec.random_clouds)
    # random clouds keep off every site: check the covering ones' shadows too
    for clouds, over in ((clouds_before, over_before), (clouds_after, over_after)):
        for box in all_mines:
            if box not in over and clouds.touches(box):
                raise ValueError(f"a cloud's shadow reaches site {box} (seed {base.seed}); try another seed")

    ordered = [after_sites[k] for k in sorted(after_sites)]
    after = replace(before, sites=tuple(ordered))
    classes = {i: s.class_id for i, s in enumerate(sites)} | {k: s.class_id for k, s in after_sites.items()}
    before_boxes = {i: s.box for i, s in enumerate(sites) if s.class_id}
    after_boxes = {k: s.box for k, s in after_sites.items() if s.class_id}
    expected = _expected_labels(before_boxes, after_boxes, classes, vanished, grown, new, clouded, clouded_before)
    return Pair(spec, before, after, clouds_before, clouds_after, expected)


# --- square pairs ---------------------------------------------------------------------------------------


def plan_square_pair(scene: SceneSpec = SceneSpec(width=1200, height=1000, objects=12), *, new: int = 3, grown: int = 2,
                     vanished: int = 2, clouded: int = 1, clouded_before: int = 1, random_clouds: int = 1,
                     dates: tuple[str, str] = ("2026-11-27", "2026-12-04")) -> SquarePair:
    """A pair of square scenes (the truth boxes differ; background identical), clouds and expected labels.

    Rectangles keep >= 6 px apart and clear of the nodata swath; a grown one
    keeps its centre and its class.  The clouds are meant for the SCL only
    (see the module docstring).
    """
    rng = np.random.default_rng([scene.seed, 1919])
    base = _place(scene, np.random.default_rng(scene.seed))
    boxes = [tuple(int(v) for v in b) for b in base.boxes]
    classes = {i: int(c) for i, c in enumerate(base.classes)}
    if vanished + grown + clouded > len(boxes):
        raise ValueError(f"the pair asks {vanished} vanished + {grown} grown + {clouded} clouded squares, the scene has {len(boxes)}")
    order = [int(i) for i in rng.permutation(len(boxes))]
    gone = set(order[:vanished])
    rest = order[vanished:]
    after_boxes = {i: b for i, b in enumerate(boxes) if i not in gone}
    every_box = list(boxes)

    def fits(box, ignore=None) -> bool:
        x0, y0, x1, y1 = box
        if x0 < 0 or y0 < 0 or x1 > scene.width or y1 > scene.height:
            return False
        if _nodata(scene, np.array([y0, y1 - 1]), np.array([[x0], [x1 - 1]])).any():
            return False
        return not any(_near(box, o, 6) for o in every_box if o != ignore)

    bigger: set[int] = set()
    for i in rest:
        if len(bigger) == grown:
            break
        x0, y0, x1, y1 = boxes[i]
        w2, h2 = math.ceil(1.5 * (x1 - x0)), math.ceil(1.5 * (y1 - y0))
        box = ((x0 + x1 - w2) // 2, (y0 + y1 - h2) // 2, (x0 + x1 - w2) // 2 + w2, (y0 + y1 - h2) // 2 + h2)
        if fits(box, ignore=boxes[i]):
            after_boxes[i] = box
            every_box.append(box)
            bigger.add(i)
    if len(bigger) < grown:
        raise ValueError(f"the pair asks {grown} grown squares, only {len(bigger)} have room to grow (seed {scene.seed})")

    appeared: set[int] = set()
    hidden_before: set[int] = set()
    for n in range(new + clouded_before):
        under_cloud = n >= new
        for _attempt in range(500):
            w, h = (int(v) for v in rng.integers(scene.min_size, scene.max_size + 1, 2))
            x, y = int(rng.integers(0, scene.width - w)), int(rng.integers(0, scene.height - h))
            box = (x, y, x + w, y + h)
            if not fits(box) or (under_cloud and not _cloud_clear(box, every_box, scene.width, scene.height)):
                continue
            key = len(boxes) + n
            after_boxes[key] = box
            classes[key] = int(rng.integers(1, 3))
            every_box.append(box)
            (hidden_before if under_cloud else appeared).add(key)
            break
        else:
            raise ValueError(f"no free ground for new square {n + 1} (seed {scene.seed})")
    for key in hidden_before:
        if not _cloud_clear(after_boxes[key], every_box, scene.width, scene.height):
            raise ValueError(f"the cloud over new square {after_boxes[key]} would touch another square (seed {scene.seed})")
    hidden: set[int] = set()
    for i in rest:
        if len(hidden) == clouded:
            break
        if i not in bigger and _cloud_clear(boxes[i], every_box, scene.width, scene.height):
            hidden.add(i)
    if len(hidden) < clouded:
        raise ValueError(f"the pair asks {clouded} clouded squares, only {len(hidden)} can be clouded alone (seed {scene.seed})")
    over_before = [after_boxes[k] for k in sorted(hidden_before)]
    over_after = [boxes[i] for i in sorted(hidden)]
    clouds_before = _clouds(scene.width, scene.height, [scene.seed, 1], over_before, [b for b in every_box if b not in over_before], random_clouds)
    clouds_after = _clouds(scene.width, scene.height, [scene.seed, 2], over_after, [b for b in every_box if b not in over_after], random_clouds)
    for clouds, over in ((clouds_before, over_before), (clouds_after, over_after)):
        for box in every_box:
            if box not in over and clouds.touches(box):
                raise ValueError(f"a cloud's shadow reaches square {box} (seed {scene.seed}); try another seed")
    before_boxes = dict(enumerate(boxes))
    keys = sorted(after_boxes)
    after = Truth.of([after_boxes[k] for k in keys], [classes[k] for k in keys])
    expected = _expected_labels(before_boxes, after_boxes, classes, gone, bigger, appeared, hidden, hidden_before)
    return SquarePair(scene, base, after, clouds_before, clouds_after, expected, dates)


# --- files -----------------------------------------------------------------------------------------------


def product_spec(date: str, tile: str = "T30PYT"):
    """The L2A ProductSpec of a pair's date (``YYYY-MM-DD``): sensing ``YYYYMMDDT100000``."""
    from minescan.synthetic.products import ProductSpec

    return ProductSpec(level="L2A", tile=tile, sensing=date.replace("-", "") + "T100000")


def _expected_json(pair, transform, crs: str) -> dict:
    def bounds(box):
        if box is None:
            return None
        x0, y0, x1, y1 = box
        (a, b), (c, d) = transform * (x0, y1), transform * (x1, y0)
        return [a, b, c, d]

    return {
        "dates": list(pair.spec.dates if isinstance(pair, Pair) else pair.dates),
        "crs": crs,
        "rule": "gone: present before only; new: after only; grown: box area >= 2 x; unknown: under high cloud at one date",
        "changes": [
            {"label": e.label, "class_id": e.class_id, "before_box": e.before_box, "after_box": e.after_box,
             "before_bounds": bounds(e.before_box), "after_bounds": bounds(e.after_box)}
            for e in pair.expected
        ],
    }


def _write_expected_gpkg(path: Path, pair, transform, crs: str) -> None:
    import pyogrio.raw
    import shapely

    from minescan.results.georef import box_polygons

    boxes = np.array([e.after_box or e.before_box for e in pair.expected], np.float64).reshape(-1, 4)
    polygons = box_polygons(boxes, transform)
    fields = [np.array([e.label for e in pair.expected], dtype=object), np.array([e.class_id for e in pair.expected], np.int32),
              np.array([json.dumps(e.before_box) for e in pair.expected], dtype=object),
              np.array([json.dumps(e.after_box) for e in pair.expected], dtype=object)]
    if path.exists():
        path.unlink()
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(polygons, dtype=object)), fields,
                      ["label", "class_id", "before_box", "after_box"], layer="expected", driver="GPKG",
                      geometry_type="Polygon", crs=crs)


def write_pair(folder: str | os.PathLike[str], pair: Pair | SquarePair | PairSpec, *, tile: str = "T30PYT",
               concessions_crs: str | None = None, extra_concessions: int = 3, partial: bool = False) -> PairFiles:
    """Write ``pair`` (planned from a PairSpec if given one) under ``folder``; see the module docstring for the files.

    ``concessions_crs``: the CRS of ``cadastre.gpkg`` (default: the scene's).
    A 2048 x 2048 px mining pair takes 10-14 s (2 CPU cores; mostly the lossless JPEG 2000 encoding).
    """
    from minescan.synthetic.concessions import concession_polygons, write_concessions
    from minescan.synthetic.products import write_safe, write_safe_from_raster

    folder = Path(folder)
    if isinstance(pair, PairSpec):
        pair = plan_pair(pair)
    dates = pair.spec.dates if isinstance(pair, Pair) else pair.dates
    roots = []
    if isinstance(pair, Pair):
        spec = pair.before.spec
        transform, crs = spec.transform, spec.crs
        for name, layout, clouds, date in (("before", pair.before, pair.clouds_before, dates[0]),
                                           ("after", pair.after, pair.clouds_after, dates[1])):
            (folder / name).mkdir(parents=True, exist_ok=True)
            scl = scl_layer(clouds, spec.width, spec.height, base=scl_classes(layout))
            with tempfile.TemporaryDirectory(dir=folder / name, prefix=".pair-") as tmp:
                raster = Path(tmp) / "scene.tif"
                write_layout(raster, layout, clouds=clouds)
                root = write_safe_from_raster(folder / name, raster, product_spec(date, tile), scl=scl)
            roots.append(root)
            write_truth(folder / f"truth_{name}.gpkg", layout, scene=root.name)
        concessions = concession_polygons((pair.before, pair.after), spec.seed, extra=extra_concessions, partial=partial)
    else:
        scene = pair.scene
        from rasterio.transform import from_origin

        from minescan.results.writers import write_detections
        from minescan.scan.stitch import SceneDetections

        transform, crs = from_origin(*scene.origin, scene.pixel_size, scene.pixel_size), f"EPSG:{scene.epsg}"
        rows, cols = np.arange(scene.height)[:, None], np.arange(scene.width)[None, :]
        nodata = _nodata(scene, rows, cols)
        for name, truth, clouds, date in (("before", pair.before, pair.clouds_before, dates[0]),
                                          ("after", pair.after, pair.clouds_after, dates[1])):
            (folder / name).mkdir(parents=True, exist_ok=True)
            scl = scl_layer(clouds, scene.width, scene.height, nodata=nodata if nodata.any() else None)
            root, _ = write_safe(folder / name, scene, truth, product_spec(date, tile), scl=scl)
            roots.append(root)
            detections = SceneDetections(truth.boxes, np.ones(len(truth.classes)), truth.classes)
            write_detections(folder / f"truth_{name}.gpkg", detections, transform=transform, crs=crs, labels=SQUARE_LABELS, scene=root.name)
        legal = {tuple(b) for t in (pair.before, pair.after) for b, c in zip(t.boxes.tolist(), t.classes) if c == 2}
        illegal = {tuple(b) for t in (pair.before, pair.after) for b, c in zip(t.boxes.tolist(), t.classes) if c == 1}
        concessions = concession_polygons(None, scene.seed, extra=extra_concessions, partial=partial, transform=transform,
                                          size=(scene.width, scene.height), legal=sorted(legal), illegal=sorted(illegal))
    cadastre = write_concessions(folder / "cadastre.gpkg", concessions, crs, to_crs=concessions_crs)
    expected = folder / "expected.json"
    expected.write_text(json.dumps(_expected_json(pair, transform, crs), indent=1))
    _write_expected_gpkg(folder / "expected.gpkg", pair, transform, crs)
    return PairFiles(roots[0], roots[1], cadastre, folder / "truth_before.gpkg", folder / "truth_after.gpkg", expected, concessions)
