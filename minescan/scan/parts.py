"""Parts of a larger object of another class: dropped when the classes cannot nest.

A detector sees an open-pit mine's benches, pit lake or tailings as objects
in their own right and may report one of them as a small object of another
class (an "illegal pit" inside a "legal mine").  Per-class NMS keeps both, and
IoU-based rules, class-agnostic or not, do too: a part covering a fifth of
the mine's box has IoU 0.2 with it.  What identifies a part is containment:
the share of the small box's area that lies inside the larger one
(intersection over the smaller box, SAHI's IOS).

When a model's classes are spatially exclusive, a box lying at least
``fraction`` inside a *larger* box of *another* class is a part of that
object and is dropped.  Boxes of one class never drop each other (stitching
and the model's NMS decide between those), and the larger box is kept
whatever the scores.  Whether the rule holds is a property of the model's
classes, so the owner of the model sets it at export (``minescan export
--drop-parts``, stored in the model's metadata) and a scan can override it
(``--drop-parts 0`` turns it off).  It is off unless set: where a small
object inside a larger one of another class is real (an illegal pit dug
inside a legal concession), the rule would hide it.
"""

from __future__ import annotations

import numpy as np
import shapely

from minescan.errors import MinescanError


class PartsError(MinescanError):
    """A containment fraction that cannot be used."""


def check_fraction(fraction: float) -> float:
    """``fraction`` if it is a usable containment share, in (0, 1]; 0 means off."""
    if not 0 <= fraction <= 1:
        raise PartsError(f"the part containment fraction must be in [0, 1] (0 = off), got {fraction!r}")
    return fraction


def part_mask(boxes: np.ndarray, classes: np.ndarray, fraction: float) -> np.ndarray:
    """Which ``boxes`` (pixel ``x0, y0, x1, y1`` [M, 4]) lie >= ``fraction`` inside a larger box of another class."""
    check_fraction(fraction)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes)
    parts = np.zeros(len(boxes), bool)
    if fraction == 0 or len(boxes) < 2:
        return parts
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    small, large = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    candidate = (classes[small] != classes[large]) & (areas[large] > areas[small])
    small, large = small[candidate], large[candidate]
    width = np.minimum(boxes[small, 2], boxes[large, 2]) - np.maximum(boxes[small, 0], boxes[large, 0])
    height = np.minimum(boxes[small, 3], boxes[large, 3]) - np.maximum(boxes[small, 1], boxes[large, 1])
    inside = np.clip(width, 0, None) * np.clip(height, 0, None) / np.maximum(areas[small], 1e-9)
    parts[small[inside >= fraction]] = True
    return parts
