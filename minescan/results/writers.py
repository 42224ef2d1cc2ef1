"""Writing detections as map-ready vector files, atomically.

The format follows the file extension: ``.geojson``/``.json`` is RFC 7946
GeoJSON (WGS84 longitude/latitude, counter-clockwise exteriors), ``.gpkg`` a
GeoPackage in the scene's own CRS.  Each feature carries the class id, the
class label, the score, the scene name and the box in scene pixels
(pixel-corner convention), so a result can be traced back to the raster.

Files are written under a temporary name in the destination folder and
renamed into place, so an interrupted run never leaves a partial file under
the final name, and an existing result is replaced only by a complete one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pyogrio.raw
import shapely
from pyproj import CRS

from minescan.errors import MinescanError
from minescan.results.georef import box_polygons, to_wgs84
from minescan.scan.stitch import SceneDetections

DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}


class OutputError(MinescanError):
    """A result file that cannot be written."""


def output_driver(path: str | os.PathLike[str]) -> str:
    """The OGR driver for ``path``'s extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        raise OutputError(f"--out {path}: unknown extension {suffix or '(none)'!r}; use .geojson or .gpkg")
    return DRIVERS[suffix]


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail early, before any scanning, if ``path`` cannot be written."""
    path = Path(path)
    output_driver(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"--out {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"--out {path}: not writable")
    if path.is_dir():
        raise OutputError(f"--out {path}: is a folder")


def write_detections(
    path: str | os.PathLike[str],
    detections: SceneDetections,
    *,
    transform,
    crs: CRS | str,
    labels: Mapping[int, str],
    scene: str,
) -> Path:
    """Write ``detections`` (scene pixels) to ``path`` as georeferenced polygons; return the path."""
    path = Path(path)
    driver = output_driver(path)
    polygons = box_polygons(detections.boxes, transform)
    out_crs = CRS.from_user_input(crs)
    options: dict[str, str] = {}
    if driver == "GeoJSON":
        polygons = to_wgs84(polygons, out_crs)
        out_crs = CRS.from_epsg(4326)
        options = {"RFC7946": "YES", "COORDINATE_PRECISION": "9"}
    boxes = detections.boxes.reshape(-1, 4)
    fields = ["class_id", "class_label", "score", "scene", "col_min", "row_min", "col_max", "row_max"]
    field_data = [
        detections.classes.astype(np.int32),
        np.array([labels.get(int(c), str(int(c))) for c in detections.classes], dtype=object),
        detections.scores.astype(np.float64),
        np.array([scene] * len(detections), dtype=object),
        *(boxes[:, i].astype(np.float64) for i in range(4)),
    ]
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        pyogrio.raw.write(
            str(temporary),
            shapely.to_wkb(polygons),
            field_data,
            fields,
            layer=Path(scene).stem or "detections",
            driver=driver,
            geometry_type="Polygon",
            crs=out_crs.to_wkt(),
            layer_options=options or None,
        )
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"--out {path}: cannot write ({exc.strerror or exc})") from exc
    except Exception as exc:  # pyogrio raises its own DataSourceError/FieldError types
        raise OutputError(f"--out {path}: cannot write ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return path
