"""Writing detections as map-ready vector files, atomically, one writer per format.

The format follows the file extension; the formats are declared once, in
:data:`minescan.results.formats.RESULT_FORMATS`, and :data:`WRITERS` is built
from that table (a format GDAL writes is one entry there):

* ``.geojson`` (also ``.json``): RFC 7946 GeoJSON, WGS84 longitude/latitude,
  counter-clockwise exteriors;
* ``.gpkg``: GeoPackage in the scene's own CRS;
* ``.shp``: ESRI Shapefile in the scene's CRS, with its ``.shx``, ``.dbf``,
  ``.prj`` and ``.cpg`` (UTF-8) beside it.  A DBF field name has at most 10
  characters, so ``class_label`` is written as ``class_lbl``
  (:data:`SHAPEFILE_FIELDS`; :mod:`minescan.results.read` maps it back); the
  other fields fit as they are;
* ``.fgb``: FlatGeobuf in the scene's CRS, without a spatial index, whose
  packing would reorder the features (a scene's few thousand boxes need none);
* ``.parquet``: GeoParquet 1.1 in the scene's CRS (WKB geometry column
  ``geometry``, the CRS as PROJJSON in the ``geo`` file metadata).  The GDAL
  inside pyogrio's wheels has no Parquet driver (pyogrio 0.13, GDAL 3.12), so
  it is written with pyarrow, an optional dependency: ``pip install
  'minescan[geoparquet]'``.

Features are in the detections' order (best score first) in every format.
The scan's metadata (the scene, the model, the domain-shift guard's
``input_shift``, ``shift_threshold`` and ``reliable``: see
:mod:`minescan.model.statistics`) is one JSON object under the key
``minescan``: a layer metadata item in GeoPackage and FlatGeobuf (QGIS shows
it in the layer's properties), a foreign member of the GeoJSON
FeatureCollection, a key of the GeoParquet schema metadata; a shapefile has
no place for it.
Each feature carries the class id, the class label, the score, the scene name
and the box in scene pixels (pixel-corner convention), so a result can be
traced back to the raster: fields ``class_id`` (int32), ``class_label``,
``score`` (float64), ``scene``, ``col_min``, ``row_min``, ``col_max``,
``row_max`` (float64).

Files are written through :func:`minescan.results.atomic.atomic_path`: under a
hidden temporary name in the destination folder, synced, then renamed into
place, so an interrupted run never leaves a partial file under the final name,
and an existing result is replaced only by a complete one (a shapefile's
sidecars are renamed first, the ``.shp`` last).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyogrio.raw
import shapely
from pyproj import CRS

from minescan.errors import MinescanError
from minescan.model.detections import SceneDetections
from minescan.results.atomic import atomic_path
from minescan.results.formats import ALIASES, RESULT_FORMATS, ResultFormat
from minescan.results.georef import box_polygons, to_wgs84

FIELDS = ("class_id", "class_label", "score", "scene", "col_min", "row_min", "col_max", "row_max")
"""The fields of every result feature, in order."""

CONTEXT_FIELDS = ("masked", "flagged", "concession", "inside")
"""The fields a scan adds after those (:mod:`minescan.scan.assess`): the masked share of the box (NaN: no mask), 1 when
that share is over the plan's maximum, the concession holding most of the box (null: none) and the share of the box
inside any concession (NaN: no concession layer)."""

UNOBSERVED_LAYER = "unobserved"
"""The layer of areas a scan could not see (field ``reason``: masked, nodata, not scanned): the second layer of a
GeoPackage result (written with it in one atomic rename; the detections stay the first layer, the one readers open by
default), beside any other format as ``<stem>.unobserved.gpkg``."""

METADATA_KEY = "minescan"
"""The key of the scan's metadata in a result file (layer metadata item, GeoJSON foreign member, Parquet schema metadata)."""

SHAPEFILE_FIELDS = RESULT_FORMATS[".shp"].rename
"""Fields renamed in a shapefile, whose DBF field names have at most 10 characters."""

GEOPARQUET_EXTRA = RESULT_FORMATS[".parquet"].package[1]  # type: ignore[index]


class OutputError(MinescanError):
    """A result file that cannot be written."""


@dataclass(frozen=True)
class Features:
    """What a writer writes: polygons (shapely, in ``crs``), the fields by name, the layer name."""

    polygons: np.ndarray
    crs: CRS
    fields: Mapping[str, np.ndarray]
    layer: str
    metadata: Mapping[str, Any] | None = None  # the scan's, stored under "minescan" where the format can hold it


@dataclass(frozen=True)
class ResultWriter:
    """How one format is written.

    ``write(path, features)`` creates a new file at ``path`` (a temporary
    name; the caller renames it into place).  ``driver`` is the OGR driver
    name of the format.  ``wgs84``: the features are reprojected to WGS84
    first.  ``sidecars``: suffixes of the files written beside the main one.
    ``check``: raises :class:`OutputError` if the writer cannot run here.
    """

    driver: str
    write: Callable[[Path, Features], None]
    wgs84: bool = False
    sidecars: tuple[str, ...] = ()
    check: Callable[[], object] | None = None


def _ogr(driver: str, *, rename: Mapping[str, str] | None = None, metadata: str = "",
         **options: str) -> Callable[[Path, Features], None]:
    """A writer through pyogrio (GDAL/OGR) with ``driver`` and layer creation ``options``; ``metadata`` as in ResultFormat."""

    def write(path: Path, features: Features) -> None:
        names = [(rename or {}).get(name, name) for name in features.fields]
        layer_options = dict(options)
        layer_metadata = None
        if features.metadata is not None and metadata == "layer":
            layer_metadata = {METADATA_KEY: json.dumps(features.metadata, sort_keys=True)}
        elif features.metadata is not None and metadata == "collection":
            layer_options["FOREIGN_MEMBERS_COLLECTION"] = json.dumps({METADATA_KEY: features.metadata}, sort_keys=True)
        pyogrio.raw.write(
            str(path),
            shapely.to_wkb(features.polygons),
            list(features.fields.values()),
            names,
            layer=features.layer,
            driver=driver,
            geometry_type="Polygon",
            crs=features.crs.to_wkt(),
            layer_options=layer_options or None,
            layer_metadata=layer_metadata,
        )

    return write


def require_pyarrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or :class:`OutputError` naming the extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise OutputError(
            f"GeoParquet (.parquet) needs pyarrow ({exc}): pip install 'minescan[{GEOPARQUET_EXTRA}]'"
        ) from exc
    return pyarrow, pyarrow.parquet


def _write_geoparquet(path: Path, features: Features) -> None:
    """GeoParquet 1.1 (https://geoparquet.org/releases/v1.1.0/): a WKB ``geometry`` column and the ``geo`` metadata."""
    pa, pq = require_pyarrow()
    column = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": features.crs.to_json_dict(),  # PROJJSON
        "edges": "planar",
        "orientation": "counterclockwise",
    }
    if len(features.polygons):
        column["bbox"] = [float(v) for v in shapely.total_bounds(features.polygons)]
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    table = pa.table(
        {
            **{name: pa.array(values) for name, values in features.fields.items()},
            "geometry": pa.array(list(shapely.to_wkb(features.polygons)), pa.binary()),
        }
    )
    schema = {b"geo": json.dumps(geo).encode()}
    if features.metadata is not None:
        schema[METADATA_KEY.encode()] = json.dumps(features.metadata, sort_keys=True).encode()
    pq.write_table(table.replace_schema_metadata(schema), str(path))


CUSTOM: dict[str, Callable[[Path, Features], None]] = {"Parquet": _write_geoparquet}
"""Writers of formats GDAL/OGR cannot write here, by the ``driver`` name their table entry gives."""


def _writer(entry: ResultFormat) -> ResultWriter:
    write = CUSTOM.get(entry.driver) or _ogr(entry.driver, rename=entry.rename, metadata=entry.metadata, **entry.options)
    return ResultWriter(entry.driver, write, wgs84=entry.wgs84, sidecars=entry.sidecars,
                        check=require_pyarrow if entry.package and entry.package[0] == "pyarrow" else None)


WRITERS: dict[str, ResultWriter] = {ext: _writer(entry) for ext, entry in RESULT_FORMATS.items()}
"""One writer per extension of :data:`~minescan.results.formats.RESULT_FORMATS` (``.json`` is ``.geojson``)."""

DRIVERS = {ext: WRITERS[ALIASES.get(ext, ext)].driver for ext in [*RESULT_FORMATS, *ALIASES]}
"""The OGR driver name of each extension, aliases included."""


def _known() -> str:
    names = list(RESULT_FORMATS)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def result_writer(path: str | os.PathLike[str]) -> ResultWriter:
    """The writer for ``path``'s extension; :class:`OutputError` for an extension no writer has."""
    suffix = Path(path).suffix.lower()
    writer = WRITERS.get(ALIASES.get(suffix, suffix))
    if writer is None:
        raise OutputError(f"{path}: unknown result format {suffix or '(no extension)'!r}; use {_known()}")
    return writer


def output_driver(path: str | os.PathLike[str]) -> str:
    """The OGR driver name of ``path``'s format (e.g. ``GPKG``); :class:`OutputError` for an unknown extension."""
    return result_writer(path).driver


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail early, before any scanning, if ``path`` cannot be written (unknown format, missing folder or package)."""
    writer = result_writer(Path(path))
    check_file_writable(path)
    if writer.check is not None:
        writer.check()


def check_file_writable(path: str | os.PathLike[str]) -> None:
    """Fail early if a file cannot be created or replaced at ``path`` (missing folder, a folder there, no permission)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{path}: not writable")


def write_detections(
    path: str | os.PathLike[str],
    detections: SceneDetections,
    *,
    transform,
    crs: CRS | str,
    labels: Mapping[int, str],
    scene: str,
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    unobserved: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write ``detections`` (scene pixels) to ``path`` as georeferenced polygons; return the path.

    ``extra``: more fields after :data:`FIELDS` (a scan's :data:`CONTEXT_FIELDS`); ``unobserved``: polygons (scene
    CRS) and their reasons, written as the :data:`UNOBSERVED_LAYER`.  On any failure ``path`` (and a shapefile's
    sidecars) keeps its old content and no temporary file is left; the error is one line naming ``path``.
    """
    boxes = detections.boxes.reshape(-1, 4)
    values = [
        detections.classes.astype(np.int32),
        np.array([labels.get(int(c), str(int(c))) for c in detections.classes], dtype=object),
        detections.scores.astype(np.float64),
        np.array([scene] * len(detections), dtype=object),
        *(boxes[:, i].astype(np.float64) for i in range(4)),
    ]
    fields = dict(zip(FIELDS, values)) | dict(extra or {})
    layers = [] if unobserved is None else [(UNOBSERVED_LAYER, unobserved[0], {"reason": np.asarray(unobserved[1], dtype=object)})]
    inside = result_writer(path).driver == "GPKG"
    if not inside:  # the areas first: a result is never newer than the areas beside it (a comparison reads both)
        if layers:
            write_features(unobserved_path(path), layers[0][1], crs, layers[0][2], layer=UNOBSERVED_LAYER)
        else:
            unobserved_path(path).unlink(missing_ok=True)  # an earlier scan's areas would not be this one's
    return write_features(path, box_polygons(detections.boxes, transform), crs, fields,
                          layer=Path(scene).stem or "detections", metadata=metadata, extra_layers=layers if inside else ())


def unobserved_path(path: str | os.PathLike[str]) -> Path:
    """Where a result that is not a GeoPackage keeps its unobserved areas: ``<stem>.unobserved.gpkg`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{UNOBSERVED_LAYER}.gpkg")


def write_features(path: str | os.PathLike[str], polygons: np.ndarray, crs: CRS | str, fields: Mapping[str, np.ndarray], *,
                   layer: str, metadata: Mapping[str, Any] | None = None,
                   extra_layers: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray]]] = ()) -> Path:
    """Write ``polygons`` (shapely, in ``crs``) with ``fields`` to ``path`` in the format its extension names, atomically.

    What every result layer goes through (detections, heatmap regions, changes): the format table, WGS84 for GeoJSON,
    the atomic writer; on failure ``path`` keeps its old content and the error is one line naming it.
    ``extra_layers`` (name, polygons, fields), in ``crs`` too, go into the same file (a GeoPackage) before it is
    renamed into place.
    """
    path = Path(path)
    writer = result_writer(path)
    if writer.check is not None:
        writer.check()
    out_crs = CRS.from_user_input(crs)
    if writer.wgs84:
        polygons, out_crs = to_wgs84(polygons, out_crs), CRS.from_epsg(4326)
    features = Features(polygons, out_crs, dict(fields), layer, metadata)
    try:
        with atomic_path(path, sidecars=writer.sidecars) as temporary:
            writer.write(temporary, features)
            for name, more, more_fields in extra_layers:
                more = to_wgs84(more, crs) if writer.wgs84 else more
                writer.write(temporary, Features(more, out_crs, dict(more_fields), name))
    except MinescanError:
        raise
    except Exception as exc:  # pyogrio and pyarrow raise their own error types
        text = str(exc).strip()
        raise OutputError(f"cannot write {path}: {text.splitlines()[0] if text else type(exc).__name__}") from exc
    return path
