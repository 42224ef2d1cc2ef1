"""After stitching: each detection put in context, and what the scan could not see.

The last stage of a detector's scan (:meth:`~minescan.Scanner.scan`, and
:func:`~minescan.scan.split.stitch_parts` for a split scene).  It adds to
the stitched detections, without moving any box:

* ``masked``: the share of each box's area under the scene's quality mask
  (:mod:`minescan.quality`; NaN without a mask); a box more than
  ``max_masked`` masked is ``flagged`` (its box and class rest on what the
  model half saw), or dropped when the plan says ``drop``;
* ``concession`` and ``inside``: the concession holding the largest share of
  the box and the share of the box inside any concession
  (:mod:`minescan.context.concessions`; None / NaN without a layer);
* the unobserved areas (:meth:`Assessment.unobserved`): masked cells, nodata
  and tiles never scanned, which results carry so that a later comparison
  (:mod:`minescan.change`) says "unknown" there rather than "gone".

Masking never moves or rescores a detection: with ``flag`` the boxes are the
unmasked scan's boxes in every tile that was scanned.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minescan.model.detections import SceneDetections


@dataclass(frozen=True)
class ConcessionSource:
    """A concession layer as a plan names it (picklable: a Ray worker opens it again); ``stamp`` = (size, mtime_ns)."""

    path: str
    field: str | None
    stamp: tuple[int, int]
    description: str

    def settings(self) -> list:
        """What a result depends on (a run's fingerprint): the file, its size and time, the field."""
        return [self.path, list(self.stamp), self.field]

    def describe(self) -> str:
        return self.description

    def layer(self) -> Any:
        """The opened layer (one per process and file version: a run's scenes share its index)."""
        return _open_layer(self.path, self.field, self.stamp)


_LAYERS: dict[tuple, Any] = {}
_LAYERS_LOCK = threading.Lock()


def _open_layer(path: str, field_name: str | None, stamp: tuple[int, int]) -> Any:
    from minescan.context.concessions import open_concessions

    key = (path, field_name, stamp)
    with _LAYERS_LOCK:
        if key not in _LAYERS:
            _LAYERS[key] = open_concessions(path, field_name)
        return _LAYERS[key]


def concession_source(path: str, field_name: str | None) -> ConcessionSource:
    """The layer at ``path`` checked (readable, polygons, the field) and named for the plan."""
    from minescan.context.concessions import ConcessionError

    absolute = os.path.abspath(path)
    try:
        info = os.stat(absolute)
    except OSError:
        raise ConcessionError(f"concessions {path}: file not found") from None
    stamp = (info.st_size, info.st_mtime_ns)
    layer = _open_layer(absolute, field_name, stamp)
    return ConcessionSource(absolute, field_name, stamp, layer.describe())


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` added to a scan's detections (see the module docstring); arrays are per detection."""

    masked: np.ndarray | None = None  # float64 share of each box masked; None: the scan had no mask
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    concession: np.ndarray | None = None  # object: id/name or None; None: no concession layer
    inside: np.ndarray | None = None  # float64 share inside any concession
    dropped: int = 0  # detections dropped as masked (plan masked="drop")
    masked_tiles: int = 0  # tiles the mask kept from the detector
    clear_share: float | None = None  # of the scene's data, under the mask
    coverage: np.ndarray | None = None  # minescan.scan.coverage states, final
    coverage_factor: int = 0

    def columns(self, count: int) -> dict[str, np.ndarray]:
        """The result fields ``masked``, ``flagged``, ``concession``, ``inside`` for ``count`` detections."""
        flagged = self.flagged if len(self.flagged) == count else np.zeros(count, bool)
        return {
            "masked": self.masked.astype(np.float64) if self.masked is not None else np.full(count, np.nan),
            "flagged": flagged.astype(np.int32),
            "concession": self.concession if self.concession is not None else np.array([None] * count, dtype=object),
            "inside": self.inside.astype(np.float64) if self.inside is not None else np.full(count, np.nan),
        }


def unobserved(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (scene CRS) of what ``result``'s scan could not see, and each one's reason: ``masked``, ``nodata``
    or ``not scanned`` (tiles kept from the detector)."""
    from minescan.quality.mask import mask_polygons
    from minescan.scan.coverage import NODATA, NOT_SCANNED

    a: Assessment = result.assessment
    polygons: list[np.ndarray] = []
    reasons: list[str] = []
    if result.transform is None:
        return np.array([], dtype=object), np.array([], dtype=object)
    quality = result.plan.quality
    if quality is not None:
        masked = quality.mask.masked if quality.mask.valid is None else quality.mask.masked & quality.mask.valid
        found = mask_polygons(masked, quality.mask.factor, result.transform)
        polygons.append(found)
        reasons += ["masked"] * len(found)
    if a.coverage is not None:
        for state, reason in ((NODATA, "nodata"), (NOT_SCANNED, "not scanned")):
            found = mask_polygons(a.coverage == state, a.coverage_factor, result.transform)
            polygons.append(found)
            reasons += [reason] * len(found)
    geometries = np.concatenate(polygons) if polygons else np.array([], dtype=object)
    if len(geometries):  # cells reach past the scene's last row and column: cut them at its extent
        import shapely

        from minescan.results.georef import box_polygons

        extent = box_polygons(np.array([[0, 0, result.plan.width, result.plan.height]], np.float64), result.transform)[0]
        parts, index = shapely.get_parts(shapely.intersection(geometries, extent), return_index=True)
        keep = shapely.get_type_id(parts) == 3  # polygons (a cut may leave a multipolygon, or a line on the edge)
        geometries, reasons = parts[keep], [reasons[i] for i in index[keep]]
    return geometries, np.array(reasons, dtype=object)


def assess(result: Any, masked_tiles: int = 0, coverage: Any = None) -> Any:
    """``result`` (a :class:`~minescan.scan.scanner.ScanResult`) with its :class:`Assessment` (see the module docstring)."""
    plan = result.plan
    detections: SceneDetections = result.detections
    quality = plan.quality
    masked = flagged = None
    dropped = 0
    if quality is not None:
        masked = quality.mask.box_shares(detections.boxes)
        over = masked > quality.max_masked
        if quality.action == "drop" and over.any():
            keep = ~over
            dropped = int(over.sum())
            detections = SceneDetections(detections.boxes[keep], detections.scores[keep], detections.classes[keep])
            masked, over = masked[keep], over[keep]
        flagged = over
    concession = inside = None
    if plan.concessions is not None and result.crs is not None:
        from minescan.results.georef import box_polygons

        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(plan.height, plan.width, result.transform)
        # The scene's extent: the layer reads (and indexes) the concessions there once, for every scan of the scene.
        joined = plan.concessions.layer().join(box_polygons(detections.boxes, result.transform), result.crs,
                                                extent=(west, south, east, north))
        concession, inside = joined.concession, joined.inside
    assessment = Assessment(
        masked=masked, flagged=flagged if flagged is not None else np.zeros(len(detections), bool),
        concession=concession, inside=inside, dropped=dropped, masked_tiles=masked_tiles,
        clear_share=quality.mask.clear_share if quality is not None else None,
        coverage=coverage.final if coverage is not None else None, coverage_factor=coverage.factor if coverage is not None else 0,
    )
    return dataclasses.replace(result, detections=detections, assessment=assessment)


_SENSING = re.compile(r"(?:^|_)(\d{4})(\d{2})(\d{2})T\d{6}(?:_|$)")


def sensing_date(name: str) -> str | None:
    """``YYYY-MM-DD`` from a Sentinel-2 product id (its first ``YYYYMMDDThhmmss``), else None."""
    match = _SENSING.search(Path(name).name)
    return "-".join(match.groups()) if match else None
