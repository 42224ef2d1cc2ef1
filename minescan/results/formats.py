"""The result formats minescan writes, by file extension (a table importable at no cost, for help texts).

:mod:`minescan.results.writers` holds how each is written; this table says
which extensions exist and what they hold, so the command line can list them
without importing GDAL's vector stack.
"""

from __future__ import annotations

from pathlib import Path

RESULT_FORMATS = {
    ".gpkg": "GeoPackage, scene CRS",
    ".geojson": "GeoJSON RFC 7946, WGS84",
    ".shp": "ESRI Shapefile, scene CRS",
    ".fgb": "FlatGeobuf, scene CRS",
    ".parquet": "GeoParquet, scene CRS",
}
ALIASES = {".json": ".geojson"}


def describe(path: str) -> str:
    """``path`` and what it will hold, e.g. ``x.gpkg (GeoPackage, scene CRS)``."""
    suffix = Path(path).suffix.lower()
    what = RESULT_FORMATS.get(ALIASES.get(suffix, suffix))
    return f"{path} ({what})" if what else path
