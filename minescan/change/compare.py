"""Comparing result files of two dates: read them into one projected CRS, match sites, write the changes.

Reading (:func:`read_sites`).  A date is one or more result files (a run holds one per scene; the scenes may
be tiles in different UTM zones).  Each file is a minescan result (GeoPackage, GeoJSON, also FlatGeobuf,
GeoParquet, Shapefile) or any other vector file of polygons:

* the main layer is the file's first layer that is not named ``unobserved``;
* fields, all optional: ``class_label`` (``class_lbl`` in a shapefile; else ``class_id`` as text; else
  null), ``score`` (default 1), ``masked`` (NaN), ``flagged`` (0), ``concession`` (null), ``inside`` (NaN),
  ``scene`` (default: the file's stem);
* metadata under ``minescan`` (:func:`minescan.results.read.scan_metadata`; a GeoPackage's is read from the
  main layer): ``footprint``, WKT of the raster's extent in the FILE's CRS, and ``date`` ("YYYY-MM-DD").  A
  file without a footprint has an unknown footprint, taken as "observed everywhere" (not as the extent of its
  features, which would call every site outside its boxes unobserved); a date with one such file has an
  unknown footprint;
* unobserved areas: the ``unobserved`` layer of the same file, else a GeoPackage ``<stem>.unobserved.gpkg``
  beside it (its ``unobserved`` layer, else its first: :mod:`minescan.results.writers` names both), polygons
  with a ``reason`` field ("masked", "nodata", "not scanned"); none = all of the footprint was observed.

Several files of one date: the date observed a place when any of its files did (its footprint holds it and
its unobserved area does not), so a cloud over one tile is no cloud where an overlapping tile saw clearly.

Everything is reprojected (vertex by vertex; footprints and unobserved areas segmentized first) into one
projected CRS: the NEW date's first file's CRS when projected, else (GeoJSON) the UTM zone at the centre of
its sites (:func:`minescan.results.read.common_crs`); if the new date has nothing to place, the old date's.

Writing (:meth:`ChangeSet.write`): a GeoPackage (layer ``changes``, the common CRS) or GeoJSON (WGS84), fields
:data:`FIELDS`, nulls where a value does not exist (no old site, no concessions known...), and the rule,
files and counts under ``minescan`` (layer metadata / FeatureCollection member).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import shapely
from pyproj import CRS, Transformer

from minescan.change.match import ChangeRule, Coverage, SiteChange, Sites, count, match_sites
from minescan.errors import MinescanError
from minescan.results.writers import UNOBSERVED_LAYER, unobserved_path

CHANGES_LAYER = "changes"
OUTPUT_SUFFIXES = (".gpkg", ".geojson", ".json")
FIELDS = ("site", "change", "reason", "class_label", "old_class_label", "score", "old_score", "area_m2", "old_area_m2",
          "area_change_m2", "area_change_pct", "concession", "inside", "lon", "lat", "date", "old_date")
"""The fields of a changes file, in order."""


class ChangeError(MinescanError):
    """A result file that cannot be compared, or a changes file that cannot be written."""


@dataclass(frozen=True)
class _File:
    """One result file as read, in its own CRS."""

    path: Path
    crs: CRS
    sites: Sites
    footprint: Any | None
    unobserved: list[tuple[Any, str]]  # (geometry, reason), in unobserved_crs
    unobserved_crs: CRS | None
    date: str | None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _floats(values, default: float) -> np.ndarray | None:
    """Numbers of a field (nulls: ``default``), or None for a field the file lacks."""
    if values is None:
        return None
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        array = np.array([np.nan if v is None or v == "" else float(v) for v in values], dtype=np.float64)
    array = array.astype(np.float64)
    return np.where(np.isnan(array), default, array)


def _texts(values) -> np.ndarray | None:
    if values is None:
        return None
    return np.array([None if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else str(v)
                     for v in values], dtype=object)


def _layer_metadata(path: Path, layer: str | None) -> dict | None:
    """The ``minescan`` metadata of ``path``'s main layer (GeoPackage/FlatGeobuf: that layer's own)."""
    from minescan.results.read import scan_metadata
    from minescan.results.writers import METADATA_KEY

    if layer is None or path.suffix.lower() in (".geojson", ".json", ".parquet"):
        return scan_metadata(path)
    import pyogrio

    try:  # scan_metadata reads the first layer, and pyogrio warns when a file holds more than one: name it
        raw = (pyogrio.read_info(str(path), layer=layer).get("layer_metadata") or {}).get(METADATA_KEY)
        raw = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except Exception:  # an unreadable metadata item is no metadata (as in scan_metadata)
        return None
    return raw if isinstance(raw, dict) else None


def _read_layer(path: Path, layer: str | None) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    import pyogrio.raw

    try:
        meta, _, geometry, fields = pyogrio.raw.read(str(path), layer=layer)
    except Exception as exc:  # pyogrio's own error types
        raise ChangeError(f"{path}: not a readable vector file ({_one_line(exc)})") from exc
    return meta, geometry, fields


def _polygons(path: Path, wkb: np.ndarray, what: str) -> np.ndarray:
    geometries = shapely.from_wkb(wkb) if len(wkb) else np.zeros(0, dtype=object)
    missing = np.flatnonzero(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    if len(missing):
        raise ChangeError(f"{path}: {what}feature {int(missing[0])} has no geometry")
    kinds = shapely.get_type_id(geometries)
    bad = np.flatnonzero(~np.isin(kinds, (3, 6)))  # Polygon, MultiPolygon
    if len(bad):
        kind = shapely.get_type_id(geometries[bad[0]])
        name = ("Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                "GeometryCollection")[kind]
        raise ChangeError(f"{path}: has no polygons ({what}feature {int(bad[0])} is a {name}); sites are areas")
    return geometries


def _read_file(path: str | os.PathLike[str]) -> _File:
    """Read one result file (see the module docstring); :class:`ChangeError` naming it when it cannot be."""
    from minescan.results.read import ResultFileError, _field, _read

    path = Path(path)
    if not path.exists():
        raise ChangeError(f"{path}: not found")
    if not path.is_file():
        raise ChangeError(f"{path}: is not a file")
    layer, layers = None, []
    if path.suffix.lower() == ".parquet":
        try:
            meta, wkb, fields = _read(path)  # GeoParquet as pyogrio would give it
        except ResultFileError as exc:
            raise ChangeError(str(exc)) from exc
    else:
        import pyogrio

        try:
            layers = [str(name) for name, _ in pyogrio.list_layers(str(path))]
        except Exception as exc:  # pyogrio's own error types
            raise ChangeError(f"{path}: not a result file ({_one_line(exc)})") from exc
        mains = [name for name in layers if name != UNOBSERVED_LAYER]
        if not mains:
            raise ChangeError(f"{path}: not a result file (no layer besides {UNOBSERVED_LAYER!r})")
        layer = mains[0]
        meta, wkb, fields = _read_layer(path, layer)
    if not meta.get("crs"):
        raise ChangeError(f"{path}: has no CRS; cannot place its sites on the map")
    crs = CRS.from_user_input(meta["crs"])
    geometries = _polygons(path, wkb, "")
    n = len(geometries)

    def get(name: str):
        values = _field(meta, fields, name)
        return None if values is None or len(values) != n else values

    labels = _texts(get("class_label"))
    if labels is None and get("class_id") is not None:
        labels = _texts([None if v is None else int(v) if float(v).is_integer() else v for v in get("class_id")])
    flagged = _floats(get("flagged"), 0.0)
    metadata = _layer_metadata(path, layer) or {}
    date = str(metadata["date"]) if metadata.get("date") else None
    scene = _texts(get("scene"))
    sites = Sites.of(
        geometries,
        class_label=labels,
        score=_floats(get("score"), 1.0),
        masked=_floats(get("masked"), np.nan),
        flagged=None if flagged is None else (flagged != 0).astype(np.int32),
        concession=_texts(get("concession")),
        inside=_floats(get("inside"), np.nan),
        scene=np.array([s if s else path.stem for s in scene], dtype=object) if scene is not None else [path.stem] * n,
        date=[date] * n,
    )
    footprint = None
    if metadata.get("footprint"):
        try:
            footprint = shapely.from_wkt(str(metadata["footprint"]))
        except Exception as exc:  # shapely's GEOSException
            raise ChangeError(f"{path}: its metadata's footprint is not WKT ({_one_line(exc)})") from exc
    unobserved, unobserved_crs = _read_unobserved(path, layers, crs)
    return _File(path, crs, sites, footprint, unobserved, unobserved_crs, date)


def _read_unobserved(path: Path, layers: list[str], crs: CRS) -> tuple[list[tuple[Any, str]], CRS | None]:
    """The unobserved polygons of ``path`` (its ``unobserved`` layer, else ``<stem>.unobserved.gpkg``) and their CRS."""
    from minescan.results.read import _field

    if UNOBSERVED_LAYER in layers:
        source, layer = path, UNOBSERVED_LAYER
    else:
        source = unobserved_path(path)
        if not source.is_file():
            return [], None
        import pyogrio

        try:
            names = [str(name) for name, _ in pyogrio.list_layers(str(source))]
        except Exception as exc:  # pyogrio's own error types
            raise ChangeError(f"{source}: not a readable GeoPackage of unobserved areas ({_one_line(exc)})") from exc
        layer = UNOBSERVED_LAYER if UNOBSERVED_LAYER in names else names[0]
    meta, wkb, fields = _read_layer(source, layer)
    own = CRS.from_user_input(meta["crs"]) if meta.get("crs") else crs
    geometries = _polygons(source, wkb, "unobserved ")
    reasons = _texts(_field(meta, fields, "reason"))
    if reasons is None or len(reasons) != len(geometries):
        reasons = [None] * len(geometries)
    return [(g, r or "unobserved") for g, r in zip(geometries, reasons)], own


def _reproject(geometries, source: CRS, target: CRS, *, segmentize: bool = False):
    """``geometries`` (array or one geometry) from ``source`` to ``target``; areas segmentized first (64 pieces)."""
    if source.equals(target):
        return geometries
    if segmentize:
        array = np.asarray(geometries, dtype=object).reshape(-1)
        if len(array):
            x0, y0, x1, y1 = shapely.total_bounds(array)
            step = max(x1 - x0, y1 - y0) / 64
            if step > 0:
                geometries = shapely.segmentize(geometries, step)
    transformer = Transformer.from_crs(source, target, always_xy=True)
    return shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _choose_crs(files: Sequence[_File]) -> CRS:
    """The first file's CRS when projected, else the UTM zone at the centre of the files' sites (or footprints)."""
    from minescan.results.read import ResultFile, common_crs

    first = files[0]
    if first.crs.is_projected:
        return first.crs
    parts = [_reproject(f.sites.geometries, f.crs, first.crs) for f in files]
    geometries = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
    if not len(geometries):
        geometries = np.array([_reproject(f.footprint, f.crs, first.crs) for f in files if f.footprint is not None],
                              dtype=object)
    if not len(geometries):
        return first.crs
    placed = ResultFile(first.path, geometries, np.ones(len(geometries), np.int64), np.ones(len(geometries)), {}, first.crs)
    try:
        return common_crs(placed, placed)
    except MinescanError as exc:
        raise ChangeError(str(exc)) from exc


def _empty(geometry) -> bool:
    return geometry is None or shapely.is_empty(geometry)


def _coverage(files: Sequence[_File], crs: CRS) -> Coverage:
    """What the files of one date observed, in ``crs`` (see the module docstring)."""
    footprints, unobserved, reasons = [], [], {}
    for f in files:
        fp = None if f.footprint is None else _reproject(f.footprint, f.crs, crs, segmentize=True)
        geoms = [g for g, _ in f.unobserved]
        un = None
        if geoms:
            projected = _reproject(np.array(geoms, dtype=object), f.unobserved_crs or f.crs, crs, segmentize=True)
            un = shapely.union_all(shapely.make_valid(projected))
            for g, (_, reason) in zip(projected, f.unobserved):
                reasons.setdefault(reason, []).append(g)
        footprints.append(fp)
        unobserved.append(un)
    seen = shapely.union_all([fp if _empty(un) else shapely.difference(fp, un)
                              for fp, un in zip(footprints, unobserved) if fp is not None])
    if all(fp is not None for fp in footprints):
        footprint = shapely.union_all(footprints)
        hidden = shapely.difference(footprint, seen)
    else:  # an unknown footprint sees everywhere but its unobserved area
        footprint = None
        unknown = [un for fp, un in zip(footprints, unobserved) if fp is None]
        hidden = None if any(_empty(un) for un in unknown) else shapely.intersection_all(unknown)
        if hidden is not None and not _empty(seen):
            hidden = shapely.difference(hidden, seen)
    if _empty(hidden):
        hidden = None
    by_reason = {} if hidden is None else {
        reason: shapely.intersection(shapely.union_all(shapely.make_valid(np.array(g, dtype=object))), hidden)
        for reason, g in reasons.items()
    }
    dates = sorted({f.date for f in files if f.date})
    return Coverage(footprint, hidden, by_reason, ",".join(dates) if dates else None)


def _read_files(paths: Sequence[str | os.PathLike[str]]) -> list[_File]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ChangeError("no result files to compare")
    return [_read_file(p) for p in paths]


def _place(files: Sequence[_File], crs: CRS) -> tuple[Sites, Coverage]:
    parts = []
    for f in files:
        s = f.sites
        parts.append(Sites(**{**{name: getattr(s, name) for name in Sites.__dataclass_fields__},
                              "geometries": np.asarray(_reproject(s.geometries, f.crs, crs), dtype=object)}))
    return Sites.concat(parts), _coverage(files, crs)


def read_sites(paths: Sequence[str | os.PathLike[str]], crs: CRS | str | None = None) -> tuple[Sites, Coverage, CRS]:
    """The sites and coverage of one date's result files, in ``crs`` (default: chosen as the module docstring says)."""
    files = _read_files(paths)
    crs = _choose_crs(files) if crs is None else CRS.from_user_input(crs)
    sites, coverage = _place(files, crs)
    return sites, coverage, crs


@dataclass(frozen=True)
class ChangeSet:
    """The changes between two dates, in ``crs``, ordered as :func:`~minescan.change.match.match_sites` orders them.

    ``old``/``new``: the two dates' detections (files concatenated in the order given), which a change's
    ``old_members``/``new_members`` index: ``new.scene[i]`` names the scene a member came from.
    """

    changes: tuple[SiteChange, ...]
    crs: CRS
    rule: ChangeRule
    old_paths: tuple[str, ...] = ()
    new_paths: tuple[str, ...] = ()
    old_date: str | None = None
    new_date: str | None = None
    old: Sites | None = None  # the detections a change's old_members index (files in the order given), crs
    new: Sites | None = None  # ... and its new_members

    def __len__(self) -> int:
        return len(self.changes)

    def counts(self) -> dict[str, int]:
        """Changes per label, every label present."""
        return count(self.changes)

    def alerts(self) -> list[SiteChange]:
        """New sites outside every concession (``inside == 0``), largest first.

        A site whose ``inside`` is NaN (its scan knew no concessions) is not "outside concessions": nothing
        was known to be outside of; it is a plain new site.
        """
        return [c for c in self.changes if c.change == "new" and c.outside_concessions]

    def lonlat(self) -> np.ndarray:
        """[N, 2] longitude, latitude (WGS84, 6 decimals) of each change's region's centroid."""
        if not self.changes:
            return np.zeros((0, 2))
        centroids = shapely.centroid(np.array([c.region for c in self.changes], dtype=object))
        lonlat = _reproject(centroids, self.crs, CRS.from_epsg(4326))
        return np.round(shapely.get_coordinates(lonlat), 6)

    def fields(self) -> dict[str, np.ndarray]:
        """The written fields (:data:`FIELDS`), None/NaN where a value does not exist (written as null)."""

        def floats(name: str) -> np.ndarray:
            return np.array([np.nan if getattr(c, name) is None else getattr(c, name) for c in self.changes], np.float64)

        def texts(name: str) -> np.ndarray:
            return np.array([getattr(c, name) or None for c in self.changes], dtype=object)

        lonlat = self.lonlat()
        return {
            "site": np.arange(1, len(self.changes) + 1, dtype=np.int32),
            "change": texts("change"),
            "reason": texts("reason"),
            "class_label": texts("class_label"),
            "old_class_label": texts("old_class_label"),
            "score": floats("score"),
            "old_score": floats("old_score"),
            "area_m2": floats("area_m2"),
            "old_area_m2": floats("old_area_m2"),
            "area_change_m2": floats("area_change_m2"),
            "area_change_pct": floats("area_change_pct"),
            "concession": texts("concession"),
            "inside": floats("inside"),
            "lon": lonlat[:, 0].astype(np.float64),
            "lat": lonlat[:, 1].astype(np.float64),
            "date": texts("date"),
            "old_date": texts("old_date"),
        }

    def metadata(self) -> dict[str, Any]:
        epsg = self.crs.to_epsg()
        return {"rule": self.rule.as_dict(), "counts": self.counts(), "old": list(self.old_paths),
                "new": list(self.new_paths), "old_date": self.old_date, "date": self.new_date,
                "crs": f"EPSG:{epsg}" if epsg else self.crs.to_string()}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the changes to ``path`` (.gpkg: layer ``changes`` in the common CRS; .geojson/.json: WGS84), atomically."""
        from minescan.results.writers import write_features

        path = Path(path)
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ChangeError(f"{path}: changes are written as GeoPackage (.gpkg) or GeoJSON (.geojson), "
                              f"not {path.suffix or '(no extension)'!r}")
        polygons = np.array([c.geometry for c in self.changes], dtype=object)
        return write_features(path, polygons, self.crs, self.fields(), layer=CHANGES_LAYER, metadata=self.metadata())


def compare_results(old_paths: Sequence[str | os.PathLike[str]], new_paths: Sequence[str | os.PathLike[str]],
                    rule: ChangeRule = ChangeRule(), *, new_crs: CRS | str | None = None) -> ChangeSet:
    """Read both dates' result files, match their sites by ``rule`` and return the changes (see the modules' docstrings).

    ``new_crs``: the common CRS to use (default: chosen from the new date's files, see the module docstring).
    """
    new_files, old_files = _read_files(new_paths), _read_files(old_paths)
    if new_crs is not None:
        crs = CRS.from_user_input(new_crs)
    else:
        crs = _choose_crs(new_files)
        if not crs.is_projected:
            crs = _choose_crs(old_files)
    new, new_cover = _place(new_files, crs)
    old, old_cover = _place(old_files, crs)
    changes = match_sites(old, new, old_cover, new_cover, rule)
    return ChangeSet(tuple(changes), crs, rule, tuple(str(f.path) for f in old_files), tuple(str(f.path) for f in new_files),
                     old_cover.date, new_cover.date, old, new)
