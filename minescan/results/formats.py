"""The result formats minescan writes: one entry per file extension, the only place a format is declared.

An entry says what the file holds and how GDAL/OGR writes it (driver,
layer options, field renames, sidecar files); :mod:`minescan.results.writers`
builds its writers from this table, so adding a format GDAL writes is one
entry here (a format GDAL cannot write also names a function in
``writers.CUSTOM``).  The table imports nothing heavy, so the command line
lists the formats in its help without loading GDAL's vector stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class ResultFormat:
    """One result format.

    ``driver`` is the OGR driver (or a key of ``writers.CUSTOM``); ``wgs84``:
    features are reprojected to WGS84 longitude/latitude first; ``options``:
    OGR layer creation options; ``rename``: fields stored under other names
    (a DBF field name has at most 10 characters); ``sidecars``: files written
    beside the main one; ``package``: an optional Python package it needs and
    the extra that installs it.
    """

    description: str
    driver: str
    wgs84: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    sidecars: tuple[str, ...] = ()
    package: tuple[str, str] | None = None
    metadata: str = ""  # where the scan's metadata goes: "layer" (OGR layer metadata), "collection", "schema", "" (none)


RESULT_FORMATS: dict[str, ResultFormat] = {
    ".gpkg": ResultFormat("GeoPackage, scene CRS", "GPKG", metadata="layer"),
    # The scan's metadata is a foreign member "minescan" of the FeatureCollection (RFC 7946 section 6.1).
    ".geojson": ResultFormat("GeoJSON RFC 7946, WGS84", "GeoJSON", wgs84=True,
                             options={"RFC7946": "YES", "COORDINATE_PRECISION": "9"}, metadata="collection"),
    # A shapefile has no place for metadata: the scan's (the guard's verdict) is in the run summary only.
    ".shp": ResultFormat("ESRI Shapefile, scene CRS", "ESRI Shapefile", options={"ENCODING": "UTF-8"},
                         rename={"class_label": "class_lbl"}, sidecars=(".shx", ".dbf", ".prj", ".cpg")),
    # No spatial index: its packing would reorder the features (a scene's few thousand boxes need none).
    ".fgb": ResultFormat("FlatGeobuf, scene CRS", "FlatGeobuf", options={"SPATIAL_INDEX": "NO"}, metadata="layer"),
    # pyogrio's GDAL (3.12 in pyogrio 0.13) has no Parquet driver: written with pyarrow (writers.CUSTOM).
    ".parquet": ResultFormat("GeoParquet 1.1, scene CRS", "Parquet", package=("pyarrow", "geoparquet"), metadata="schema"),
}
ALIASES = {".json": ".geojson"}


def describe(path: str) -> str:
    """``path`` and what it will hold, e.g. ``x.gpkg (GeoPackage, scene CRS)``."""
    suffix = Path(path).suffix.lower()
    entry = RESULT_FORMATS.get(ALIASES.get(suffix, suffix))
    return f"{path} ({entry.description})" if entry else path
