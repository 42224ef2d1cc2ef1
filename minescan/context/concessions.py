"""Concessions: which licensed area a detection lies in, and how much of it lies inside any.

A concession layer is any polygon layer pyogrio reads (GeoPackage, GeoJSON,
Shapefile, FlatGeobuf...), in any CRS.  :func:`open_concessions` checks it
(file, layer, CRS, geometry type, the id/name field) from its metadata alone,
without reading its features; :meth:`ConcessionLayer.join` then answers, for
a scene's detection boxes (shapely polygons in the scene's CRS), per box:

- ``concession``: the id/name of the concession holding the largest share of
  the box's area; ``None`` when no concession covers any of it.  Shares that
  differ by at most :data:`TIE_TOLERANCE` tie, and a tie goes to the lowest
  id (numeric order when the id is a number field or the feature id, text
  order otherwise);
- ``inside``: the share of the box's area inside the *union* of all
  concessions (two overlapping concessions over the same ground count once);
- ``share``: the share of the box inside the chosen concession.

Invariants: ``0 <= share <= inside <= 1``; ``concession is None`` exactly when
``inside == 0`` (a box that merely touches a concession's edge is outside it).
Areas are measured in the detections' CRS (a scene's UTM zone: metres),
where the boxes are rectangles.  Shares within 1e-9 of 0 or 1 are reported
as 0 or 1 (reprojection moves a shared edge by nanometres).

The id/name field (``concession_field``): the one given, else the first of
:data:`DEFAULT_FIELDS` the layer has (any letter case), else the feature id
(fid) as text.  A feature whose field is null is named ``#<fid>``.

Speed: a layer of 100,000 concessions is never scanned polygon by polygon.
A join reads only the features whose bounding box meets the detections'
extent (``pyogrio.raw.read(bbox=...)`` in the layer's CRS: a GeoPackage
answers from its R-tree spatial index; a Shapefile is filtered by GDAL while
it reads it, without an index), reprojects those to the
detections' CRS, builds a shapely ``STRtree`` over them and asks it for all
(box, concession) pairs that intersect in one vectorized call.  A box (an
axis-aligned rectangle in the scene CRS) takes a concession whose bounds lie
inside it whole, and clips the others with GEOS's rectangle clipping (5x
faster than a general intersection, measured); other polygons take the
general intersection, on whole arrays.  Pieces of one box that do not
overlap (tested pairwise on bounds, then on their intersection's area, on
whole arrays) add up; only a box whose pieces overlap (overlapping
concessions) needs a union (one small ``union_all``).  The index is cached
per (CRS, extent) in the layer object, so a run opens the layer once and a
caller that passes the scene's extent (``extent=``) reuses one index for
every join over that scene (LRU of :data:`CACHE_SIZE` extents).  A format
GDAL parses whole for any query (GeoJSON...) is read once per layer object
and kept in memory with its own STRtree.  Joins are
thread-safe: the cache is guarded by a lock (a join that needs a new index
waits while another is being built; queries on built indexes run side by
side).

Measured (``benchmarks/concession_join.py``, AMD EPYC, 2 cores, a shared
machine; a full 10980 x 10980 px scene scans in 7.7 s with the demo
detector): against 100,000 concessions in a GeoPackage in EPSG:4326, the
join of the scene's 95 detections costs 19 ms cold (open, R-tree read of 894
concessions, reprojection, STRtree, join) and, with 11,802 concessions over
the scene, 108 ms; the worst case, 5,000 boxes against those 11,802, 219 ms
cold and 239 ms for the next scene: at most 0.031 of the scan (target 0.10).
A GeoJSON copy costs 2.2 s on the first join (the whole file parsed, then
kept: 9 ms for the next scene).  Before rectangle clipping and the
disjoint-pieces shortcut, the worst case took 0.76 s.

Reprojection: edges are densified before they are transformed (to
:data:`GEOGRAPHIC_SEGMENT` degrees in a geographic layer,
:data:`PROJECTED_SEGMENT_M` metres in a projected one), because an edge that
is straight in longitude/latitude is curved in UTM.  Measured at 45 degrees
north in EPSG:32633: a 10 km edge along a parallel bulges 1.96 m away from
the straight line between its ends (a 100 m box's share would move by up to
2 %); a 0.005 degree piece (394 m) bulges 3 mm.  Ten times denser (0.0005
degrees) made the benchmark's worst case 1.7x slower (0.39 s against 0.23 s)
and moved no share by more than 7e-6.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from minescan.errors import MinescanError, SettingError

DEFAULT_FIELDS = ("id", "licence_id", "license_id", "name", "concession")
TIE_TOLERANCE = 1e-9  # shares closer than this tie (then the lowest id wins)
GEOGRAPHIC_SEGMENT = 0.005  # degrees (at most 556 m): longest edge of a geographic layer's polygon before reprojection
PROJECTED_SEGMENT_M = 500.0  # metres: the same for a projected layer in another CRS
CACHE_SIZE = 8  # (CRS, extent) indexes kept per layer
_ONE = 1.0 - 1e-9  # shares above this are reported as 1
_ZERO = 1e-9  # and shares up to this as 0 (a box along a reprojected edge)
_POLYGONAL = ("Polygon", "MultiPolygon")
# Formats GDAL parses whole for any query: read once per layer object and kept in memory.
_WHOLE_FILE_DRIVERS = frozenset({"GeoJSON", "GeoJSONSeq", "ESRIJSON", "TopoJSON", "KML", "LIBKML", "GML", "CSV", "GPX"})
_ANY = ("Unknown", "Geometry", "GeometryCollection")  # mixed layers: each feature is checked when read


class ConcessionError(MinescanError):
    """A concession layer that cannot be used (missing, not a vector file, no CRS, not polygons...)."""


class ConcessionFieldError(ConcessionError, SettingError):
    """``concession_field`` names a field the layer does not have (:class:`~minescan.errors.SettingError`)."""

    def __init__(self, value: str, path: Path, fields: Sequence[str]) -> None:
        listed = ", ".join(fields) if len(fields) else "none"
        super().__init__("concession_field", value, f"{path} has no such field (fields: {listed})")


@dataclass(frozen=True)
class ConcessionJoin:
    """Per detection: its concession (``None``: none), the share inside any concession, the chosen one's share.

    ``read`` is how many concession features the layer gave for the join's extent (the bounding-box prefilter),
    ``total`` how many it holds.
    """

    concession: np.ndarray  # object: str or None
    inside: np.ndarray  # float64 in [0, 1]
    share: np.ndarray  # float64 in [0, inside]
    read: int = 0
    total: int = 0

    def __len__(self) -> int:
        return len(self.inside)

    @property
    def outside(self) -> np.ndarray:
        """True where a detection lies outside every concession (``inside == 0``)."""
        return self.inside == 0.0

    @property
    def partly_outside(self) -> np.ndarray:
        """True where a detection lies partly inside and partly outside (``0 < inside < 1``)."""
        return (self.inside > 0.0) & (self.inside < 1.0)

    @classmethod
    def empty(cls, total: int = 0) -> "ConcessionJoin":
        return cls(np.empty(0, object), np.empty(0, np.float64), np.empty(0, np.float64), 0, total)


@dataclass(frozen=True)
class _Index:
    """The concessions near one extent, in the detections' CRS, with their STRtree."""

    geometries: np.ndarray
    names: np.ndarray  # object: str
    rank: np.ndarray  # int64: order of the ids (tie-breaking)
    tree: Any  # shapely.STRtree
    read: int  # features the file gave for the bbox
    areas: np.ndarray  # float64: each concession's area
    bounds: np.ndarray  # float64 [N, 4]


class ConcessionLayer:
    """One polygon layer of concessions, checked and ready to join (see the module docstring).

    Made by :func:`open_concessions`.  Holds no open file: each new extent reads its features with one
    bounding-box query; indexes are cached (thread-safe).
    """

    def __init__(self, path: Path, layer: str, field: str | None, default: bool, crs: Any, count: int,
                 geometry_type: str, indexed: bool, numeric_ids: bool, driver: str = "") -> None:
        self.path, self.layer, self.field, self.default = path, layer, field, default
        self.crs, self.count, self.geometry_type, self.indexed, self.driver = crs, count, geometry_type, indexed, driver
        self._whole: tuple | None = None  # a whole-file format's features, read once (see _features)
        self._numeric_ids = numeric_ids
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, _Index] = OrderedDict()
        self.reads = 0  # bounding-box queries made so far (cache misses)

    def __repr__(self) -> str:
        return f"ConcessionLayer({self.describe()})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a worker process) without its lock and cached indexes: the worker builds its own."""
        state = dict(self.__dict__)
        state["_lock"], state["_cache"], state["_whole"], state["reads"] = None, None, None, 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._cache = threading.Lock(), OrderedDict()

    def describe(self) -> str:
        """One line, e.g. ``cadastre.gpkg (layer cadastre, 100000 polygons, EPSG:4326, indexed), field licence_id [default]``."""
        count = f"{self.count} polygons" if self.count >= 0 else "polygons"
        index = "indexed" if self.indexed else "no spatial index" + (
            ", read whole once" if self.driver in _WHOLE_FILE_DRIVERS else "")
        if self.field is None:
            chosen = "feature id (fid) [default: none of " + ", ".join(DEFAULT_FIELDS) + "]"
        else:
            chosen = f"field {self.field}" + (" [default]" if self.default else "")
        return f"{self.path.name} (layer {self.layer}, {count}, {_crs_text(self.crs)}, {index}), {chosen}"

    def join(self, polygons: Iterable[Any], crs: Any, *, extent: Sequence[float] | None = None) -> ConcessionJoin:
        """Each polygon's concession, inside share and chosen share (see the module docstring).

        ``polygons``: shapely polygons in ``crs`` (anything :class:`pyproj.CRS` takes), e.g.
        :func:`minescan.results.georef.box_polygons` of a scene's boxes in the scene CRS.  ``extent``
        (xmin, ymin, xmax, ymax in ``crs``, e.g. the scene's bounds) should cover them (else it is widened to):
        joins with the same CRS and extent share one cached index; the default is the polygons' own bounds.
        """
        import shapely
        from pyproj import CRS

        polygons = np.asarray(list(polygons) if not isinstance(polygons, np.ndarray) else polygons, dtype=object).reshape(-1)
        n = len(polygons)
        if n == 0:
            return ConcessionJoin.empty(self.count)
        crs = CRS.from_user_input(crs)
        own = shapely.total_bounds(polygons)
        if extent is None:
            extent = own
        elif np.all(np.isfinite(own)):  # an extent that does not cover the polygons is widened (another index)
            extent = (min(extent[0], own[0]), min(extent[1], own[1]), max(extent[2], own[2]), max(extent[3], own[3]))
        extent = tuple(float(v) for v in extent)
        index = self._index(crs, extent)

        concession = np.full(n, None, dtype=object)
        inside = np.zeros(n, np.float64)
        best = np.zeros(n, np.float64)
        if len(index.geometries) == 0:
            return ConcessionJoin(concession, inside, best, index.read, self.count)

        areas = shapely.area(polygons)
        areas = np.where(np.isfinite(areas), areas, 0.0)
        hit, tree_hit = index.tree.query(polygons, predicate="intersects")
        keep = areas[hit] > 0
        hit, tree_hit = hit[keep], tree_hit[keep]
        pieces, piece_areas = _pieces(polygons, hit, index, tree_hit)
        share = piece_areas / areas[hit]
        positive = share > _ZERO  # reprojection noise along a shared edge is not a share
        hit, tree_hit, pieces, share = hit[positive], tree_hit[positive], pieces[positive], np.minimum(share[positive], 1.0)
        if len(hit) == 0:
            return ConcessionJoin(concession, inside, best, index.read, self.count)

        # The chosen concession: the largest share, ties (within TIE_TOLERANCE) to the lowest id.
        np.maximum.at(best, hit, share)
        candidate = share >= best[hit] - TIE_TOLERANCE
        c_hit, c_tree = hit[candidate], tree_hit[candidate]
        order = np.lexsort((index.rank[c_tree], c_hit))
        first = np.ones(len(order), bool)
        first[1:] = c_hit[order][1:] != c_hit[order][:-1]
        chosen = order[first]
        concession[c_hit[chosen]] = index.names[c_tree[chosen]]

        # Inside: the union of all concessions over the box.  Disjoint pieces add up; a box whose pieces overlap
        # (overlapping concessions) takes their union.
        inside = np.bincount(hit, weights=share, minlength=n).astype(np.float64)
        for box, group in _overlapping_groups(hit, pieces):
            inside[box] = shapely.area(shapely.union_all(group)) / areas[box]
        inside = np.clip(np.maximum(inside, best), 0.0, 1.0)
        inside[inside > _ONE] = 1.0
        best[best > _ONE] = 1.0
        return ConcessionJoin(concession, inside, best, index.read, self.count)

    # -- the index -------------------------------------------------------------------------------------

    def _index(self, crs: Any, extent: tuple[float, ...]) -> _Index:
        key = (crs.to_wkt(), extent)
        with self._lock:
            index = self._cache.get(key)
            if index is not None:
                self._cache.move_to_end(key)
                return index
            index = self._build(crs, extent)
            self._cache[key] = index
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return index

    def _build(self, crs: Any, extent: tuple[float, ...]) -> _Index:
        import shapely
        from pyproj import Transformer

        same = crs.equals(self.crs, ignore_axis_order=True)
        bbox: tuple[float, ...] | None = extent
        if not same:
            to_layer = Transformer.from_crs(crs, self.crs, always_xy=True)
            try:
                bbox = tuple(to_layer.transform_bounds(extent[0], extent[1], extent[2], extent[3], densify_pts=21))
            except Exception:  # pyproj.ProjError: the extent has no place in the layer's CRS
                bbox = None
            if bbox is not None and (not np.all(np.isfinite(bbox)) or bbox[0] > bbox[2] or bbox[1] > bbox[3]):
                bbox = None  # across the antimeridian or out of the CRS's area: read everything, the tree still sorts it out
        fids, geometries, values, read = self._features(bbox)
        names = _names(values, fids)
        if not same and len(geometries):
            geometries = _reproject(geometries, self.crs, crs)
            finite = np.all(np.isfinite(shapely.bounds(geometries)), axis=1)
            geometries, names, fids = geometries[finite], names[finite], fids[finite]
            if values is not None:
                values = values[finite]
        invalid = ~shapely.is_valid(geometries)
        if invalid.any():
            geometries[invalid] = shapely.make_valid(geometries[invalid])
        rank = self._rank(names, values, fids)
        tree = shapely.STRtree(geometries)
        if len(geometries):
            tree.query(geometries[:1])  # builds the tree now, under the lock, so concurrent joins only read it
        return _Index(geometries, names, rank, tree, read, shapely.area(geometries), shapely.bounds(geometries).reshape(-1, 4))

    def _features(self, bbox: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        """(fids, polygons in the layer's CRS, field values or None, features read) of the features meeting ``bbox``.

        From the file with a bounding-box query, or, for a format GDAL parses whole whatever the query
        (:data:`_WHOLE_FILE_DRIVERS`: GeoJSON...), from the whole layer read once and kept in memory with its own
        STRtree, so the second scene of a run does not parse the file again.
        """
        import shapely

        if self.driver not in _WHOLE_FILE_DRIVERS:
            return self._read(bbox)
        if self._whole is None:
            fids, geometries, values, _ = self._read(None)
            self._whole = (fids, geometries, values, shapely.STRtree(geometries))
        fids, geometries, values, tree = self._whole
        if bbox is None:
            return fids, geometries.copy(), values, len(fids)
        take = np.sort(tree.query(shapely.box(*bbox)))
        return fids[take], geometries[take], None if values is None else values[take], len(take)

    def _read(self, bbox: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        import pyogrio.raw
        import shapely

        columns = [self.field] if self.field is not None else []
        try:
            _, fids, wkb, fields = pyogrio.raw.read(str(self.path), layer=self.layer, columns=columns, bbox=bbox,
                                                   return_fids=True, force_2d=True)
        except Exception as exc:
            raise ConcessionError(f"{self.path}: cannot read layer {self.layer} ({_first_line(exc)})") from exc
        self.reads += 1
        read = len(wkb)
        fids = np.asarray(fids, np.int64) if fids is not None else np.arange(read, dtype=np.int64)
        geometries = shapely.from_wkb(wkb, on_invalid="warn") if read else np.empty(0, object)
        present = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
        types = shapely.get_type_id(geometries)
        wrong = present & (types != shapely.GeometryType.POLYGON) & (types != shapely.GeometryType.MULTIPOLYGON)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise ConcessionError(f"{self.path}: feature {fids[i]} of layer {self.layer} is a "
                                  f"{geometries[i].geom_type}, not a polygon")
        values = np.asarray(fields[0])[present] if columns else None
        return fids[present], geometries[present], values, read

    def _rank(self, names: np.ndarray, values: np.ndarray | None, fids: np.ndarray) -> np.ndarray:
        """Rank of each feature's id: numeric order for number fields and fids, text order otherwise."""
        if values is None:
            keys = np.asarray(fids, np.float64)
        elif self._numeric_ids:
            keys = np.asarray(values, np.float64)
            keys = np.where(np.isnan(keys), np.inf, keys)
        else:
            keys = names.astype(str)
        order = np.argsort(keys, kind="stable")
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return rank


def open_concessions(path: str | os.PathLike[str], field: str | None = None, layer: str | None = None) -> ConcessionLayer:
    """The concession layer at ``path`` (its first layer, or ``layer``), checked from its metadata.

    ``field`` (the API's ``concession_field``) names the id/name field; by default the first of
    :data:`DEFAULT_FIELDS` present (any letter case), else the feature id.  Raises :class:`ConcessionError`
    (one line naming the file) for a missing or unreadable file, an unknown layer, a layer without CRS or with
    other geometries than polygons, and :class:`ConcessionFieldError` for an unknown field.  An empty layer is
    fine: every detection is then outside.
    """
    import pyogrio
    from pyproj import CRS

    path = Path(path)
    if not path.exists():
        raise ConcessionError(f"{path}: not found")
    try:
        layers = pyogrio.list_layers(str(path))
    except Exception as exc:  # pyogrio's DataSourceError and friends
        raise ConcessionError(f"{path}: not a readable vector file ({_first_line(exc)})") from exc
    names = [str(name) for name, _ in layers]
    if not names:
        raise ConcessionError(f"{path}: has no layers")
    if layer is None:
        layer = names[0]
    elif layer not in names:
        raise ConcessionError(f"{path}: no layer {layer!r} (layers: {', '.join(names)})")
    try:
        info = pyogrio.read_info(str(path), layer=layer, force_feature_count=True)
    except Exception as exc:
        raise ConcessionError(f"{path}: cannot read layer {layer} ({_first_line(exc)})") from exc

    geometry_type = info.get("geometry_type")
    if geometry_type is None:
        raise ConcessionError(f"{path}: layer {layer} has no geometries")
    base = str(geometry_type).split(" ")[0]
    if base not in _POLYGONAL and base not in _ANY:
        raise ConcessionError(f"{path}: layer {layer} holds {geometry_type} geometries, not polygons")
    if not info.get("crs"):
        raise ConcessionError(f"{path}: layer {layer} has no CRS, so its concessions cannot be placed on the map")
    try:
        crs = CRS.from_user_input(info["crs"])
    except Exception as exc:
        raise ConcessionError(f"{path}: layer {layer} has a CRS pyproj cannot read ({_first_line(exc)})") from exc

    fields = [str(f) for f in info.get("fields", [])]
    dtypes = [str(d) for d in info.get("dtypes", [])]
    chosen, default = _choose_field(path, fields, field)
    numeric = chosen is None or _kind(dtypes[fields.index(chosen)]) in "iuf"
    indexed = bool((info.get("capabilities") or {}).get("fast_spatial_filter", False))
    return ConcessionLayer(path, layer, chosen, default, crs, int(info.get("features", -1)), str(geometry_type),
                           indexed, numeric, str(info.get("driver") or ""))


def outside_counts(join: ConcessionJoin, class_labels: Sequence[str]) -> dict[str, int]:
    """Detections outside every concession (``inside == 0``), per class label (every label given; sorted)."""
    return _count(join.outside, class_labels)


def partly_outside_counts(join: ConcessionJoin, class_labels: Sequence[str]) -> dict[str, int]:
    """Detections partly outside (``0 < inside < 1``), per class label (every label given; sorted)."""
    return _count(join.partly_outside, class_labels)


def _count(flags: np.ndarray, class_labels: Sequence[str]) -> dict[str, int]:
    labels = np.asarray(list(class_labels), dtype=object)
    if len(labels) != len(flags):
        raise ValueError(f"{len(labels)} class labels for {len(flags)} joined detections")
    return {str(label): int(np.count_nonzero(flags[labels == label])) for label in sorted(set(labels.tolist()), key=str)}


def _choose_field(path: Path, fields: list[str], field: str | None) -> tuple[str | None, bool]:
    lower: dict[str, list[str]] = {}
    for name in fields:
        lower.setdefault(name.lower(), []).append(name)
    if field is None:
        for candidate in DEFAULT_FIELDS:
            if candidate in lower:
                return lower[candidate][0], True
        return None, True
    if field in fields:
        return field, False
    matches = lower.get(str(field).lower(), [])
    if len(matches) == 1:
        return matches[0], False
    raise ConcessionFieldError(field, path, fields)


def _names(values: np.ndarray | None, fids: np.ndarray) -> np.ndarray:
    """The features' ids as text (object array): the field's values, the fid when there is no field or it is null."""
    fid_text = np.asarray(fids, np.int64).astype(str).astype(object)
    if values is None:
        return fid_text
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str).astype(object)
    if values.dtype.kind == "f":
        names = np.array([str(int(v)) if float(v).is_integer() else str(v) if v == v else "" for v in values.tolist()],
                         dtype=object)
        names[np.isnan(values)] = np.char.add("#", fid_text[np.isnan(values)].astype(str)).astype(object)
        return names
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values.tolist()):
        if isinstance(value, str):
            out[k] = value
        elif value is None:
            out[k] = f"#{fid_text[k]}"
        elif isinstance(value, bytes):
            out[k] = value.decode("utf-8", "replace")
        elif isinstance(value, float) and value.is_integer():
            out[k] = str(int(value))
        else:
            out[k] = str(value)
    return out


def _overlapping_groups(hit: np.ndarray, pieces: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    """(box, its pieces) for each box with two pieces that overlap (with area), from the (box, piece) pairs.

    Pairs of pieces of one box are tested on their bounds first, then on the area of their intersection (whole
    arrays); adjacent concessions that share an edge do not overlap.
    """
    import shapely

    if len(hit) < 2:
        return []
    sort = np.argsort(hit, kind="stable")
    boxes, starts, counts = np.unique(hit[sort], return_index=True, return_counts=True)
    # every pair (i < j) of positions within one box's run of the sorted pairs
    after = np.repeat(starts + counts, counts) - np.arange(len(sort)) - 1  # partners later in the same run
    left = np.repeat(np.arange(len(sort)), after)
    first = np.repeat(np.cumsum(after) - after, after)
    right = left + 1 + np.arange(len(left)) - first
    if len(left) == 0:
        return []
    i, j = sort[left], sort[right]
    bounds = shapely.bounds(pieces).reshape(-1, 4)
    meet = ((bounds[i, 0] < bounds[j, 2]) & (bounds[j, 0] < bounds[i, 2]) & (bounds[i, 1] < bounds[j, 3])
            & (bounds[j, 1] < bounds[i, 3]))
    i, j = i[meet], j[meet]
    overlap = shapely.area(shapely.intersection(pieces[i], pieces[j])) > 0 if len(i) else np.zeros(0, bool)
    flagged = np.searchsorted(boxes, np.unique(hit[i[overlap]]))
    return [(int(boxes[k]), pieces[sort[starts[k]:starts[k] + counts[k]]]) for k in flagged]


def _pieces(polygons: np.ndarray, hit: np.ndarray, index: _Index, tree_hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersections of polygons[hit] with the index's concessions[tree_hit], and their areas.

    Detection boxes in the scene CRS are axis-aligned rectangles: a concession whose bounds lie inside the box is
    its own piece, and the others are cut with GEOS's rectangle clipping (several times faster than a general
    intersection); any other polygon takes the general intersection.
    """
    import shapely

    pieces = np.empty(len(hit), dtype=object)
    piece_areas = np.zeros(len(hit), np.float64)
    if len(hit) == 0:
        return pieces, piece_areas
    box_bounds = shapely.bounds(polygons).reshape(-1, 4)
    width, height = box_bounds[:, 2] - box_bounds[:, 0], box_bounds[:, 3] - box_bounds[:, 1]
    rectangle = (shapely.get_num_coordinates(polygons) == 5) & (shapely.get_num_interior_rings(polygons) == 0)
    rectangle &= np.abs(shapely.area(polygons) - width * height) <= 1e-12 * np.maximum(width * height, 1e-300)
    b, c = box_bounds[hit], index.bounds[tree_hit]
    whole = rectangle[hit] & (c[:, 0] >= b[:, 0]) & (c[:, 1] >= b[:, 1]) & (c[:, 2] <= b[:, 2]) & (c[:, 3] <= b[:, 3])
    pieces[whole] = index.geometries[tree_hit[whole]]
    piece_areas[whole] = index.areas[tree_hit[whole]]
    clip = np.flatnonzero(rectangle[hit] & ~whole)
    for k in clip:
        pieces[k] = shapely.clip_by_rect(index.geometries[tree_hit[k]], *b[k])
    general = ~rectangle[hit]
    pieces[general] = shapely.intersection(polygons[hit[general]], index.geometries[tree_hit[general]])
    rest = ~whole
    piece_areas[rest] = shapely.area(pieces[rest])
    return pieces, piece_areas


def _reproject(geometries: np.ndarray, source: Any, target: Any) -> np.ndarray:
    """Geometries from ``source`` to ``target`` CRS, edges densified first (see the module docstring)."""
    import shapely
    from pyproj import Transformer

    if source.is_geographic:
        segment = GEOGRAPHIC_SEGMENT
    else:
        factor = source.axis_info[0].unit_conversion_factor if source.axis_info else 1.0
        segment = PROJECTED_SEGMENT_M / (factor or 1.0)
    geometries = shapely.segmentize(geometries, segment)
    transformer = Transformer.from_crs(source, target, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geometries, project)


def _kind(dtype: str) -> str:
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"


def _crs_text(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
