"""Georeferencing: scene pixel boxes to polygons on the map.

A box ``(x0, y0, x1, y1)`` in scene pixels uses the pixel-corner
convention, the same as the affine geotransform, which maps a pixel's
*corner* (not its centre) to map coordinates.  Its four corners go through
the transform, so a rotated or south-up raster gives the right shape, and
then, for GeoJSON, through PROJ to WGS84 longitude/latitude.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer


def box_polygons(boxes: np.ndarray, transform: Affine) -> np.ndarray:
    """Polygons (shapely, scene CRS) of pixel boxes [M, 4], exterior counter-clockwise."""
    x0, y0, x1, y1 = np.asarray(boxes, np.float64).reshape(-1, 4).T
    cols = np.stack([x0, x1, x1, x0, x0], axis=1)
    rows = np.stack([y0, y0, y1, y1, y0], axis=1)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    xs = a * cols + b * rows + c
    ys = d * cols + e * rows + f
    polygons = shapely.polygons(np.stack([xs, ys], axis=2))
    return shapely.orient_polygons(polygons, exterior_cw=False)


def to_wgs84(polygons: np.ndarray, crs: CRS | str) -> np.ndarray:
    """The polygons reprojected to WGS84 in longitude, latitude order (RFC 7946)."""
    transformer = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)

    def project(coords: np.ndarray) -> np.ndarray:
        lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.orient_polygons(shapely.transform(polygons, project), exterior_cw=False)
