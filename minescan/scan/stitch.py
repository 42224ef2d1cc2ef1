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
edges (see :mod:`minescan.raster.grid`); that whole box is kept, and every
other copy matches it inside the shared window, so the object is reported
exactly once, as the whole box.  Boxes of one class from the same tile
never suppress each other: the model has already decided between them.
With ``class_agnostic``, boxes of different classes match by the same rule,
within a tile too, and the better-placed box keeps its class.

The default threshold is 0.4, not 0.5: a trained model places a small object's
box a few pixels differently in two tiles (other context), and a 20 px box
shifted by 4 px in x and y already has IoU 0.47 with itself.  Measured with the
demo detector on six fresh 4096 px scenes: illegal-mining precision 0.89-0.96
at 0.5 (the false positives were such cross-tile twins), 0.94-0.98 at 0.4,
recall 0.98-1.00 at both.  A detector's own NMS usually suppresses at 0.4-0.6,
and SAHI matches at intersection-over-smaller 0.5 (IoU 0.33 for equal boxes).

Once every object is settled, ``drop_parts`` (if set) drops boxes that are a
part of a larger object of another class (:mod:`minescan.scan.parts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from minescan.model.detections import TileDetections
from minescan.raster.grid import Tile
from minescan.scan.parts import part_mask


@dataclass(frozen=True)
class StitchSettings:
    """Thresholds of the stitching rule (see the module docstring)."""

    iou_threshold: float = 0.4
    containment: float = 0.8
    edge_tolerance: float = 2.0
    class_agnostic: bool = False
    # Drop boxes lying this much inside a larger box of another class (minescan.scan.parts);
    # 0: off; None: the model's own setting (a scan resolves it, see minescan.scan.stitch_settings).
    drop_parts: float | None = None


class SceneDetections(TileDetections):
    """Final detections in scene pixels (pixel-corner ``x0, y0, x1, y1``), sorted by score."""


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


def _pairs_matching(boxes, classes, cut, windows, tiles, s: StitchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of boxes that the rule would call the same object, vectorized."""
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    same_class = classes[i] == classes[j]
    i, j, same_class = (a[(same_class | s.class_agnostic) & ((tiles[i] != tiles[j]) | ~same_class)] for a in (i, j, same_class))

    def clip(b, w):
        return np.concatenate([np.maximum(b[:, :2], w[:, :2]), np.minimum(b[:, 2:], w[:, 2:])], axis=1)

    def area(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    common = clip(windows[i], windows[j])
    a, b = clip(boxes[i], common), clip(boxes[j], common)
    inter_view = area(clip(a, b))
    view_iou = inter_view / np.maximum(area(a) + area(b) - inter_view, 1e-9)
    inter = area(clip(boxes[i], boxes[j]))
    contained = (cut[i] & (inter >= s.containment * area(boxes[i]))) | (cut[j] & (inter >= s.containment * area(boxes[j])))
    match = (view_iou >= s.iou_threshold) | contained
    return i[match], j[match]


def components(count: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``count`` nodes joined by edges (i, j)."""
    parent = np.arange(count)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(x) for x in range(count)])


class Stitcher:
    """Collects tile detections with :meth:`add`; :meth:`flush` and :meth:`finish` apply the rule.

    Objects are settled incrementally: :meth:`flush` with the top row of the
    next tile row returns the objects no later tile can touch (every box of
    their group lies above that row), so only about two tile rows of
    candidates are ever held, whatever the scene's size.
    """

    def __init__(self, settings: StitchSettings | None = None) -> None:
        self.settings = settings or StitchSettings()
        self._pending: dict[str, list[np.ndarray]] = {k: [] for k in ("boxes", "scores", "classes", "cut", "windows", "tiles")}
        self._added = 0
        self._settled: list[_Object] = []

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
        p = self._pending
        p["boxes"].append(boxes)
        p["scores"].append(detections.scores[keep].astype(np.float32))
        p["classes"].append(detections.classes[keep].astype(np.int32))
        p["cut"].append(cut_edges(boxes, tile, self.settings.edge_tolerance))
        p["windows"].append(np.repeat(window[None, :], len(boxes), axis=0))
        p["tiles"].append(np.full(len(boxes), tile_id))

    @property
    def pending(self) -> int:
        """Candidates not yet settled."""
        return sum(len(b) for b in self._pending["boxes"])

    def flush(self, boundary: float) -> int:
        """Settle the objects lying wholly above scene row ``boundary``; return how many."""
        if not self.pending:
            return 0
        arrays = {k: np.concatenate(v) for k, v in self._pending.items()}
        i, j = _pairs_matching(arrays["boxes"], arrays["classes"], arrays["cut"], arrays["windows"], arrays["tiles"], self.settings)
        labels = components(len(arrays["boxes"]), i, j)
        lowest = np.zeros(len(labels))
        np.maximum.at(lowest, labels, arrays["boxes"][:, 3])
        done = lowest[labels] <= boundary
        settled = self._resolve(*(arrays[k][done] for k in ("boxes", "scores", "classes", "cut", "windows", "tiles")))
        self._settled.extend(settled)
        self._pending = {k: [v[~done]] for k, v in arrays.items()}
        return len(settled)

    def finish(self) -> SceneDetections:
        """Settle everything and return each object once, best score first."""
        self.flush(np.inf)
        objects = sorted(self._settled, key=lambda o: -o.score)
        boxes = np.array([o.box for o in objects], np.float64).reshape(-1, 4)
        classes = np.array([o.klass for o in objects], np.int32)
        whole = ~part_mask(boxes, classes, self.settings.drop_parts or 0.0)
        return SceneDetections(boxes[whole], np.array([o.score for o in objects], np.float32)[whole], classes[whole])

    def _resolve(self, boxes, scores, classes, cut, windows, tiles) -> list[_Object]:
        """The greedy rule of the module docstring over one set of candidates."""
        if not len(boxes):
            return []
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
