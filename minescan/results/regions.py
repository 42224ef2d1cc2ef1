"""Regions of a heatmap: connected areas at or above a probability, as polygons with their statistics.

For each class, the cells whose probability is at least ``threshold`` (NaN
never is) are grouped into 8-connected areas (``rasterio.features.shapes``),
each a polygon in the scene's CRS along the cell edges, with the class, its
area (in CRS units squared: m² for a projected CRS), the number of cells and
the maximum and mean probability of its cells.  Written through the same
writers as detections (:func:`minescan.results.writers.write_features`), so a
region layer is GeoPackage, GeoJSON, FlatGeobuf... like any result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

REGION_FIELDS = ("class_id", "class_label", "area", "cells", "max_probability", "mean_probability")


@dataclass(frozen=True)
class Regions:
    """Polygons (shapely, in the scene's CRS) and one value per field per polygon."""

    polygons: np.ndarray
    fields: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.polygons)


def heatmap_regions(probabilities: np.ndarray, cell_transform: Any, labels: Sequence[str], threshold: float,
                    classes: Sequence[int] | None = None) -> Regions:
    """The regions of ``probabilities`` [C, rows, cols] at or above ``threshold`` for ``classes`` (1-based; default
    the foreground classes, :func:`minescan.scan.heatmap.foreground_classes`)."""
    import rasterio.features
    import shapely.geometry

    polygons, values = [], {name: [] for name in REGION_FIELDS}
    from minescan.scan.heatmap import foreground_classes

    for class_id in classes or foreground_classes(probabilities.shape[0]):
        band = probabilities[class_id - 1]
        above = np.nan_to_num(band, nan=-1.0) >= threshold
        if not above.any():
            continue
        for geometry, _ in rasterio.features.shapes(above.astype(np.uint8), mask=above, connectivity=8,
                                                     transform=cell_transform):
            inside = ~rasterio.features.geometry_mask([geometry], band.shape, cell_transform) & above
            if not inside.any():
                continue
            polygon = shapely.geometry.shape(geometry)
            cells = band[inside]
            polygons.append(polygon)
            for name, value in zip(REGION_FIELDS, (class_id, labels[class_id - 1], polygon.area, int(inside.sum()),
                                                   float(cells.max()), float(cells.mean()))):
                values[name].append(value)
    types = {"class_id": np.int32, "class_label": object, "area": np.float64, "cells": np.int32,
             "max_probability": np.float64, "mean_probability": np.float64}
    return Regions(np.array(polygons, dtype=object), {n: np.array(v, dtype=types[n]) for n, v in values.items()})


def write_regions(path: str | os.PathLike[str], regions: Regions, crs: Any, *, layer: str = "regions",
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``regions`` to ``path`` (format by extension), atomically."""
    from minescan.results.writers import write_features

    return write_features(path, regions.polygons, crs, regions.fields, layer=layer, metadata=metadata)
