"""Stitching: tile detections into scene detections, each object once.

Neighbouring tiles overlap, so an object near a tile border is seen by
several tiles: whole by some, cut by the edge of others.  Plain IoU NMS
fails here: a box cut to a third of the object overlaps the whole box with
IoU 0.33 and survives as a second, truncated detection.

The rule used here compares what two tiles *both* see.  Let ``W`` be the
intersection of the two tiles' windows.  A box ``a`` from tile A and ``b``
from tile B are the same object when ``a ∩ W`` and ``b ∩ W`` have IoU >=
``iou_threshold``: inside ``W`` both tiles see the same pixels, so the whole
box and the box cut by A's edge coincide there, while two different objects
do not.  A box touching an interior tile edge (within ``edge_tolerance`` px)
is marked *cut*; as a fallback, a cut box lying mostly (>= ``containment``)
inside a kept box of the same class is also the same object.

Candidates are taken whole boxes first, then by score, then by area, and
each either starts a new object or joins the object it matches:

* joining a whole box, or joining as a whole box, is suppression: the kept
  box stays as it is;
* a cut box joining a cut box merges them into their union.  This
  reassembles objects larger than the overlap, which no tile sees whole.

Exactness: when the overlap is at least the object's size (plus the edge
tolerance), some tile holds the object whole and away from its interior
edges (see :mod:`minescan.tiling.grid`); that whole box is kept, and every
other copy matches it inside the shared window, so the object is reported
exactly once, as the whole box.  Boxes of one class from the same tile
never suppress each other: the model has already decided between them.
With ``class_agnostic``, boxes of different classes match by the same rule,
within a tile too, and the better-placed box keeps its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from minescan.engine.detections import TileDetections
from minescan.tiling.grid import Tile


@dataclass(frozen=True)
class StitchSettings:
    """Thresholds of the stitching rule (see the module docstring)."""

    iou_threshold: float = 0.5
    containment: float = 0.8
    edge_tolerance: float = 2.0
    class_agnostic: bool = False


@dataclass(frozen=True)
class SceneDetections:
    """Final detections in scene pixels (pixel-corner ``x0, y0, x1, y1``), sorted by score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def cut_edges(boxes: np.ndarray, tile: Tile, tolerance: float) -> np.ndarray:
    """Which scene-pixel ``boxes`` touch an interior edge of ``tile`` (bool [M])."""
    x0, y0, x1, y1 = boxes.T
    return (
        (tile.interior_left & (x0 - tile.col_off <= tolerance))
        | (tile.interior_top & (y0 - tile.row_off <= tolerance))
        | (tile.interior_right & (tile.col_off + tile.valid_width - x1 <= tolerance))
        | (tile.interior_bottom & (tile.row_off + tile.valid_height - y1 <= tolerance))
    )


def _area(box: np.ndarray) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _area(_intersection(a, b))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def same_object(box_a: np.ndarray, window_a: np.ndarray, box_b: np.ndarray, window_b: np.ndarray, iou: float) -> bool:
    """True when the two boxes agree (IoU >= ``iou``) inside the windows' common part."""
    common = _intersection(window_a, window_b)
    if _area(common) == 0:
        return False
    return _iou(_intersection(box_a, common), _intersection(box_b, common)) >= iou


@dataclass
class _Object:
    box: np.ndarray
    window: np.ndarray
    score: float
    klass: int
    cut: bool
    tiles: set[int] = field(default_factory=set)


class Stitcher:
    """Collects tile detections with :meth:`add`; :meth:`finish` applies the rule."""

    def __init__(self, settings: StitchSettings | None = None) -> None:
        self.settings = settings or StitchSettings()
        self._boxes: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._cut: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []
        self._tiles: list[np.ndarray] = []
        self._added = 0

    def add(self, tile: Tile, detections: TileDetections) -> None:
        """Add one tile's detections (tile pixel frame); boxes in padding past the scene are clipped."""
        tile_id = self._added
        self._added += 1
        if not len(detections):
            return
        window = np.array(
            [tile.col_off, tile.row_off, tile.col_off + tile.valid_width, tile.row_off + tile.valid_height], np.float64
        )
        boxes = detections.boxes + window[[0, 1, 0, 1]]
        boxes = np.clip(boxes, window[[0, 1, 0, 1]], window[[2, 3, 2, 3]])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        self._boxes.append(boxes)
        self._scores.append(detections.scores[keep])
        self._classes.append(detections.classes[keep])
        self._cut.append(cut_edges(boxes, tile, self.settings.edge_tolerance))
        self._windows.append(np.broadcast_to(window, boxes.shape))
        self._tiles.append(np.full(len(boxes), tile_id))

    def finish(self) -> SceneDetections:
        """Each object once: the rule of the module docstring over everything added."""
        if not self._boxes or not sum(len(b) for b in self._boxes):
            return SceneDetections(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int32))
        boxes = np.concatenate(self._boxes)
        scores = np.concatenate(self._scores)
        classes = np.concatenate(self._classes)
        cut = np.concatenate(self._cut)
        windows = np.concatenate(self._windows)
        tiles = np.concatenate(self._tiles)
        objects = self._resolve(boxes, scores, classes, cut, windows, tiles)
        objects.sort(key=lambda o: -o.score)
        return SceneDetections(
            np.array([o.box for o in objects], np.float64).reshape(-1, 4),
            np.array([o.score for o in objects], np.float32),
            np.array([o.klass for o in objects], np.int32),
        )

    def _resolve(self, boxes, scores, classes, cut, windows, tiles) -> list[_Object]:
        s = self.settings
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.lexsort((-areas, -scores, cut))
        # Only boxes that intersect can be the same object: find those pairs once with an R-tree.
        geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        by_left = np.argsort(left, kind="stable")
        left, right = left[by_left], right[by_left]
        starts = np.searchsorted(left, np.arange(len(boxes) + 1))
        owner = np.full(len(boxes), -1)
        objects: list[_Object] = []
        for i in order:
            candidates = sorted({owner[j] for j in right[starts[i] : starts[i + 1]] if owner[j] >= 0})
            match = None
            for k in candidates:
                obj = objects[k]
                same_class = obj.klass == classes[i]
                if not (same_class or s.class_agnostic):
                    continue
                if tiles[i] in obj.tiles and same_class:
                    continue  # the model already chose between its own boxes of one class
                inside = _area(_intersection(boxes[i], obj.box)) / max(areas[i], 1e-9)
                if same_object(boxes[i], windows[i], obj.box, obj.window, s.iou_threshold) or (
                    cut[i] and inside >= s.containment
                ):
                    match = k
                    break
            if match is None:
                owner[i] = len(objects)
                objects.append(_Object(boxes[i].copy(), windows[i].copy(), float(scores[i]), int(classes[i]), bool(cut[i]), {int(tiles[i])}))
                continue
            owner[i] = match
            obj = objects[match]
            obj.tiles.add(int(tiles[i]))
            if cut[i] and obj.cut:
                obj.box = np.concatenate([np.minimum(obj.box[:2], boxes[i][:2]), np.maximum(obj.box[2:], boxes[i][2:])])
                obj.window = np.concatenate([np.minimum(obj.window[:2], windows[i][:2]), np.maximum(obj.window[2:], windows[i][2:])])
                obj.score = max(obj.score, float(scores[i]))
        return objects
