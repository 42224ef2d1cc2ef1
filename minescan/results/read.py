"""Reading result files back: anyone's detections or truth, as boxes on the map.

A result file is any vector file pyogrio reads (GeoJSON, GeoPackage,
Shapefile, FlatGeobuf...; its first layer), or a GeoParquet file (read with
pyarrow, as it is written: :mod:`minescan.results.writers`), whose features
carry an integer ``class_id`` (1-based) and, for detections, a ``score``;
``class_label`` (``class_lbl`` in a shapefile, whose field names have at most
10 characters), when present, names the classes.  minescan's own results and
truth files are such files.

Boxes are compared in one CRS.  Detections and truth may come in different
ones (a GeoJSON in WGS84 longitude/latitude, a GeoPackage in the scene's
UTM zone), and a box that is a rectangle in one CRS is a slightly rotated
quadrilateral in another, so the *common* CRS is a projected one: the
detections' CRS if projected, else the truth's if projected, else the UTM
zone at the centre of the detections.  Each geometry is reprojected there
(vertex by vertex) and reduced to its bounds, ``(xmin, ymin, xmax, ymax)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from minescan.errors import MinescanError
from minescan.results.writers import METADATA_KEY, SHAPEFILE_FIELDS, require_pyarrow


class ResultFileError(MinescanError):
    """A result or truth file that cannot be read as one."""


@dataclass(frozen=True)
class ResultFile:
    """Features of a result file: geometries (its own CRS), class ids, scores (1 where it has none), labels."""

    path: Path
    geometries: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    labels: dict[int, str]
    crs: CRS

    def boxes(self, crs: CRS) -> np.ndarray:
        """Bounds [N, 4] (xmin, ymin, xmax, ymax) of the geometries reprojected to ``crs``."""
        geometries = self.geometries
        if not self.crs.equals(crs):
            transformer = Transformer.from_crs(self.crs, crs, always_xy=True)
            geometries = shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
        return shapely.bounds(geometries).reshape(-1, 4)


def _read(path: Path) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    if not path.is_file():
        raise ResultFileError(f"{path}: not found" if not path.exists() else f"{path}: is not a file")
    if path.suffix.lower() == ".parquet":
        return _read_geoparquet(path)
    try:
        meta, _, geometry, fields = pyogrio.raw.read(str(path), layer=0)  # the first: a result's detections
    except Exception as exc:  # pyogrio raises its own DataSourceError and friends
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResultFileError(f"{path}: not a readable vector file ({message})") from exc
    return meta, geometry, fields


def _read_geoparquet(path: Path) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    """A GeoParquet file in pyogrio's terms: ({"crs", "fields"}, WKB geometries, field arrays)."""
    _, pq = require_pyarrow()  # optional: one line naming the extra to install when missing
    try:
        table = pq.read_table(str(path))
    except Exception as exc:  # pyarrow raises its own error types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResultFileError(f"{path}: not a readable Parquet file ({message})") from exc
    try:
        geo = json.loads((table.schema.metadata or {})[b"geo"])
        name = geo["primary_column"]
        column = geo["columns"][name]
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultFileError(f"{path}: a Parquet file without valid GeoParquet 'geo' metadata") from exc
    if column.get("encoding", "WKB") != "WKB":
        raise ResultFileError(f"{path}: GeoParquet geometry encoding {column['encoding']!r} is not supported (only WKB)")
    crs = column.get("crs", "OGC:CRS84")  # absent: OGC:CRS84 (the spec's default); null: unknown
    names = [n for n in table.column_names if n != name]
    meta = {"crs": None if crs is None else CRS.from_json_dict(crs) if isinstance(crs, dict) else CRS.from_user_input(crs), "fields": names}
    fields = [table.column(n).to_numpy(zero_copy_only=False) for n in names]
    return meta, np.array(table.column(name).to_pylist(), dtype=object), fields


def scan_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The scan's metadata a result file records under ``minescan`` (see :mod:`minescan.results.writers`), or None.

    None for files without it (a shapefile, a file from another tool, an earlier minescan).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            _, pq = require_pyarrow()
            raw = (pq.read_schema(str(path)).metadata or {}).get(METADATA_KEY.encode())
        elif path.suffix.lower() in (".geojson", ".json"):
            raw = json.loads(path.read_text()).get(METADATA_KEY)
        else:
            raw = (pyogrio.read_info(str(path), layer=0).get("layer_metadata") or {}).get(METADATA_KEY)
        if isinstance(raw, (str, bytes)):
            raw = json.loads(raw)
    except (OSError, ValueError, AttributeError):
        return None
    except Exception:  # pyogrio's own error types: an unreadable file has no metadata to offer
        return None
    return raw if isinstance(raw, dict) else None


def _field(meta: dict, fields: list[np.ndarray], name: str) -> np.ndarray | None:
    names = list(meta["fields"])
    for candidate in (name, SHAPEFILE_FIELDS.get(name)):
        if candidate in names:
            return fields[names.index(candidate)]
    return None


def read_result_file(path: str | os.PathLike[str], *, scores: bool) -> ResultFile:
    """Read ``path``; with ``scores`` it must have a ``score`` field (detections), else scores are 1 (truth)."""
    path = Path(path)
    meta, geometry, fields = _read(path)
    if not meta.get("crs"):
        raise ResultFileError(f"{path}: has no CRS; cannot place its boxes on the map")
    crs = CRS.from_user_input(meta["crs"])
    names = ", ".join(meta["fields"]) or "none"
    # A GeoJSON file keeps its fields in its features: one without features has none, and that is fine.
    featureless = len(geometry) == 0
    class_ids = _field(meta, fields, "class_id")
    if class_ids is None and featureless:
        class_ids = np.zeros(0, np.int64)
    if class_ids is None:
        raise ResultFileError(f"{path}: has no 'class_id' field (fields: {names})")
    if np.asarray(class_ids).dtype.kind not in "iuf":
        raise ResultFileError(f"{path}: class_id must be an integer >= 1, got {class_ids[0]!r}")
    numeric = np.asarray(class_ids, np.float64)
    bad = ~((numeric >= 1) & (numeric == np.round(numeric)))  # NaN (a null) is bad too
    if bad.any():
        raise ResultFileError(f"{path}: class_id must be an integer >= 1, got {np.asarray(class_ids)[bad][0].item()!r}")
    score_values = _field(meta, fields, "score")
    if scores and score_values is None and not featureless:
        raise ResultFileError(f"{path}: has no 'score' field (fields: {names}); detections need scores")
    geometries = shapely.from_wkb(geometry)
    empty = np.flatnonzero(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    if len(empty):
        raise ResultFileError(f"{path}: feature {int(empty[0])} has no geometry")
    class_ids = numeric.astype(np.int64)
    label_values = _field(meta, fields, "class_label")
    labels = {} if label_values is None else {int(c): str(v) for c, v in zip(class_ids, label_values) if v}
    return ResultFile(
        path=path,
        geometries=geometries,
        class_ids=class_ids,
        scores=np.ones(len(class_ids)) if score_values is None else np.asarray(score_values, np.float64),
        labels=labels,
        crs=crs,
    )


def common_crs(detections: ResultFile, truth: ResultFile) -> CRS:
    """The projected CRS both files are compared in (see the module docstring)."""
    for candidate in (detections, truth):
        if candidate.crs.is_projected:
            return candidate.crs
    source = detections if len(detections.geometries) else truth
    if not len(source.geometries):
        return source.crs
    lonlat = source.boxes(CRS.from_epsg(4326))
    centre_lon = (lonlat[:, 0].min() + lonlat[:, 2].max()) / 2
    centre_lat = (lonlat[:, 1].min() + lonlat[:, 3].max()) / 2
    zones = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(centre_lon, centre_lat, centre_lon, centre_lat))
    if not zones:
        raise ResultFileError(f"{source.path}: no UTM zone at longitude {centre_lon:.4f}, latitude {centre_lat:.4f}")
    return CRS.from_epsg(zones[0].code)
