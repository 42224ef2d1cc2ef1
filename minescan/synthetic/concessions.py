"""Mining concessions (licences) over a synthetic scene, and large random concession layers.

:func:`concession_polygons` gives each legal mine (class 2) of a layout one
licence polygon that contains the mine's whole box plus a margin (the box
grown by 6-20 px, joined with an irregular star around the mine, so the
polygon is irregular but always contains the grown box), and ``extra``
licences elsewhere.  No polygon comes within 2 px of an illegal site (class
1): every illegal site lies outside every concession, *except* with
``partial=True`` one illegal site (recorded as :attr:`Concession.partial`)
gets a rectangular licence covering exactly the left half of its box
(columns ``x0 .. (x0 + x1) / 2``) plus 10 px to the left, for tests of the
inside share (0.5 for that site's box).  A mine's polygon whose margin
would reach an illegal site falls back to its box grown by 3 px (sites
keep >= 8 px apart).

Polygons are in the scene's CRS (map units); :func:`write_concessions`
writes them (fields ``licence_id``, ``holder``, ``status``, names
changeable) to GeoPackage, GeoJSON, Shapefile (or any OGR format pyogrio
knows by extension), optionally reprojected (e.g. to EPSG:4326) to exercise
a reader's reprojection.

:func:`many_concessions` makes a layer of ``count`` small random polygons
(5-12 vertices, one per cell of a jittered grid) over any bounds, for the
spatial-join benchmark; it is written in one ``pyogrio.raw.write`` call of
WKB geometries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_HOLDERS = ("Sahel Gold SA", "Kombissiri Mining", "Ashanti Resources", "Volta Minerals", "Nouna Exploration",
            "Bissa Gold", "Tarkwa Holdings", "Boromo Quarry Co")
_STATUSES = ("active", "active", "active", "expired", "application")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Concession:
    """One licence: ``polygon`` (shapely, map units of the scene's CRS) and its attributes.

    ``covers``: the legal mine boxes (scene px) it was drawn around;
    ``partial``: the illegal site's box it half covers (the documented exception), else None.
    """

    licence_id: str
    holder: str
    status: str
    polygon: object
    covers: tuple[Box, ...] = ()
    partial: Box | None = None


@dataclass(frozen=True)
class ConcessionLayer:
    """Many concessions as columns: shapely geometries [N] and str attributes [N], in ``crs``."""

    geometries: np.ndarray
    licence_id: np.ndarray
    holder: np.ndarray
    status: np.ndarray
    crs: str = field(default="")

    def __len__(self) -> int:
        return len(self.geometries)


def _sites(layouts) -> tuple[list[Box], list[Box]]:
    """Legal and illegal boxes (scene px) of one layout or several (duplicates dropped)."""
    from minescan.synthetic.mining import Layout

    layouts = [layouts] if isinstance(layouts, Layout) else list(layouts)
    legal, illegal = {}, {}
    for layout in layouts:
        for site in layout.sites:
            if site.class_id == 2:
                legal[site.box] = True
            elif site.class_id == 1:
                illegal[site.box] = True
    return _merged([tuple(map(float, b)) for b in legal]), [tuple(map(float, b)) for b in illegal]


def _merged(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes (one mine at two dates, e.g. grown) joined into their common bounding box."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _star(cx: float, cy: float, radius: float, rng: np.random.Generator, vertices: int):
    import shapely

    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.6, 1.15, vertices)
    return shapely.Polygon(np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))


def _to_map(geometry, transform):
    import shapely

    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.transform(geometry, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]))


def concession_polygons(layout, seed: int = 0, *, extra: int = 3, partial: bool = False,
                        transform=None, size: tuple[int, int] | None = None,
                        legal: Iterable[Box] | None = None, illegal: Iterable[Box] | None = None) -> tuple[Concession, ...]:
    """Licences over a scene: one per legal mine, ``extra`` elsewhere, and with ``partial`` the half-covered site.

    A mine seen at two dates with overlapping boxes (grown) gets one licence
    around both boxes.
    ``layout``: a :class:`minescan.synthetic.mining.Layout` or several (the
    two dates of a pair: every legal mine of either gets a licence, no
    licence touches an illegal site of either), or None with explicit
    ``legal``/``illegal`` boxes (scene px), ``transform`` and ``size``
    (width, height), e.g. a square scene's class 2 / class 1 boxes.
    Ids run ``ML-2023-0001``, ``ML-2023-0002``, ... in that order (mines,
    extras, partial).  See the module docstring for the geometry rules.
    """
    import shapely

    if layout is not None:
        from minescan.synthetic.mining import Layout

        first = layout if isinstance(layout, Layout) else list(layout)[0]
        legal_boxes, illegal_boxes = _sites(layout)
        transform = first.spec.transform if transform is None else transform
        size = (first.spec.width, first.spec.height) if size is None else size
    else:
        if transform is None or size is None:
            raise ValueError("concessions without a layout need transform and size")
        legal_boxes = _merged([tuple(map(float, b)) for b in (legal or ())])
        illegal_boxes = [tuple(map(float, b)) for b in (illegal or ())]
    width, height = size
    rng = np.random.default_rng([seed, 19])
    keep_out = shapely.union_all([shapely.box(*b).buffer(2.0, join_style="mitre") for b in illegal_boxes]) if illegal_boxes else None
    frame = shapely.box(0, 0, width, height)

    def clear(polygon) -> bool:
        return keep_out is None or not polygon.intersects(keep_out)

    pixel_polygons: list[tuple[object, tuple[Box, ...], Box | None, str]] = []
    for box in legal_boxes:
        x0, y0, x1, y1 = box
        margin = float(rng.uniform(6, 20))
        grown = shapely.box(x0 - margin, y0 - margin, x1 + margin, y1 + margin)
        star = _star((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * float(rng.uniform(0.8, 1.2)), rng, int(rng.integers(6, 11)))
        polygon = shapely.union(grown, star)
        if not clear(polygon):
            polygon = shapely.box(x0 - 3, y0 - 3, x1 + 3, y1 + 3)
        pixel_polygons.append((polygon, (box,), None, "active"))
    for _ in range(extra):
        for _attempt in range(200):
            r = float(rng.uniform(25, 90))
            polygon = _star(float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r)), r, rng, int(rng.integers(5, 11)))
            if polygon.is_valid and clear(polygon) and polygon.within(frame):
                pixel_polygons.append((polygon, (), None, str(rng.choice(_STATUSES))))
                break
    if partial:
        others = illegal_boxes
        for box in illegal_boxes:
            x0, y0, x1, y1 = box
            polygon = shapely.box(x0 - 10, y0, (x0 + x1) / 2, y1)
            rest = [shapely.box(*b).buffer(2.0, join_style="mitre") for b in others if b != box]
            if not any(polygon.intersects(r) for r in rest):
                pixel_polygons.append((polygon, (), box, "active"))
                break
    out = []
    for number, (polygon, covers, half, status) in enumerate(pixel_polygons, start=1):
        out.append(Concession(f"ML-2023-{number:04d}", _HOLDERS[(number - 1) % len(_HOLDERS)], status,
                              _to_map(polygon, transform), covers, half))
    return tuple(out)


def concession_pixels(concession: Concession, transform):
    """The concession's polygon back in scene px (for tests and pictures)."""
    return _to_map(concession.polygon, ~transform)


def write_concessions(path: str | os.PathLike[str], concessions: Sequence[Concession] | ConcessionLayer, crs: str | None = None,
                      *, to_crs: str | None = None, id_field: str = "licence_id", holder_field: str = "holder",
                      status_field: str = "status", layer: str | None = None) -> Path:
    """Write ``concessions`` (polygons in ``crs``; a :class:`ConcessionLayer` carries its own) to ``path``, one call.

    The format follows the extension (``.gpkg``, ``.geojson``, ``.shp``,
    ``.fgb``); ``to_crs`` reprojects (GeoJSON is always written in
    EPSG:4326, as the format requires).  The layer is named ``layer`` or the
    file's stem.  An existing file is replaced.
    """
    import pyogrio.raw
    import shapely
    from pyproj import CRS, Transformer

    path = Path(path)
    if isinstance(concessions, ConcessionLayer):
        geometries, ids, holders, statuses = concessions.geometries, concessions.licence_id, concessions.holder, concessions.status
        crs = crs or concessions.crs
    else:
        geometries = np.array([c.polygon for c in concessions], dtype=object)
        ids = np.array([c.licence_id for c in concessions], dtype=object)
        holders = np.array([c.holder for c in concessions], dtype=object)
        statuses = np.array([c.status for c in concessions], dtype=object)
    if not crs:
        raise ValueError(f"{path}: the concessions' CRS is needed")
    target = "EPSG:4326" if path.suffix.lower() in (".geojson", ".json") else (to_crs or crs)
    if CRS.from_user_input(target) != CRS.from_user_input(crs):
        transformer = Transformer.from_crs(crs, target, always_xy=True)
        geometries = shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile", ".fgb": "FlatGeobuf"}.get(path.suffix.lower())
    if driver is None:
        raise ValueError(f"{path}: concessions are written as .gpkg, .geojson, .shp or .fgb")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if driver == "ESRI Shapefile":
            for sibling in path.parent.glob(f"{path.stem}.*"):
                sibling.unlink()
        else:
            path.unlink()
    wkb = shapely.to_wkb(geometries)
    pyogrio.raw.write(
        str(path), wkb, [np.asarray(ids, dtype=object), np.asarray(holders, dtype=object), np.asarray(statuses, dtype=object)],
        [id_field, holder_field, status_field], layer=layer or path.stem, driver=driver, geometry_type="Polygon",
        crs=CRS.from_user_input(target).to_wkt() if driver != "GeoJSON" else "EPSG:4326",
    )
    return path


def many_concessions(bounds: tuple[float, float, float, float], crs: str, count: int = 100_000, seed: int = 0) -> ConcessionLayer:
    """``count`` small random polygons (5-12 vertices each) spread over ``bounds`` (x0, y0, x1, y1, map units of ``crs``).

    The bounds are cut into a grid of about ``count`` square cells (row by
    row, the first ``count`` used); each polygon is a star of 5-12
    vertices at radius 0.15-0.38 cell around a point jittered by up to
    0.1 cell from its cell's centre, so polygons stay inside their cell and
    never overlap.  Vectorised: 100,000 polygons take well under a second.
    """
    import shapely

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    x0, y0, x1, y1 = map(float, bounds)
    rng = np.random.default_rng([seed, 100])
    cell = float(np.sqrt((x1 - x0) * (y1 - y0) / count))
    nx = max(1, int(np.ceil((x1 - x0) / cell)))
    ny = int(np.ceil(count / nx))
    cell = min((x1 - x0) / nx, (y1 - y0) / ny)
    index = np.arange(count)
    cx = x0 + (index % nx + 0.5) * cell + rng.uniform(-0.1, 0.1, count) * cell
    cy = y1 - (index // nx + 0.5) * cell + rng.uniform(-0.1, 0.1, count) * cell
    vertices = rng.integers(5, 13, count)
    ring = np.repeat(index, vertices + 1)  # closed rings: the first vertex repeated
    starts = np.concatenate([[0], np.cumsum(vertices + 1)[:-1]])
    position = np.arange(len(ring)) - np.repeat(starts, vertices + 1)
    slot = np.minimum(position, np.repeat(vertices, vertices + 1))  # position == vertices: close the ring
    slot = np.where(slot == np.repeat(vertices, vertices + 1), 0, slot)
    phase = rng.uniform(0, 2 * np.pi, count)
    jitter = rng.uniform(-0.3, 0.3, (count, 12))
    radii = rng.uniform(0.15, 0.38, (count, 12)) * cell
    n = vertices[ring]
    a = phase[ring] + 2 * np.pi * (slot + jitter[ring, slot]) / n  # increasing around the centre: a simple star
    r = radii[ring, slot]
    coords = np.column_stack([cx[ring] + r * np.cos(a), cy[ring] + r * np.sin(a)])
    rings = shapely.linearrings(coords, indices=ring)
    polygons = shapely.polygons(rings)
    ids = np.array([f"CL-{i:06d}" for i in range(1, count + 1)], dtype=object)
    holders = np.array(_HOLDERS, dtype=object)[index % len(_HOLDERS)]
    statuses = np.array(_STATUSES, dtype=object)[rng.integers(0, len(_STATUSES), count)]
    return ConcessionLayer(polygons, ids, holders, statuses, crs)
