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

The rule is written once, :func:`may_match` (which pairs are compared at
all) and :func:`same_object` (vectorised over pairs), and used twice: to
group candidates that may be one object, so that :meth:`Stitcher.flush` can
settle groups lying wholly above a row, and by the greedy pass above within
a group (the containment tested for the candidate only).

Once every object is settled, ``drop_parts`` (if set) drops boxes that are a
part of a larger object of another class (:mod:`minescan.scan.parts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np
import shapely

from minescan.defaults import DEFAULTS
from minescan.model.detections import SceneDetections, TileDetections
from minescan.raster.grid import Tile
from minescan.scan.parts import part_mask

if TYPE_CHECKING:
    from minescan.raster.strips import RowEnd

# SceneDetections lives in minescan.model.detections; re-exported for existing importers.
__all__ = ["SceneDetections", "StitchSettings", "Stitcher", "components", "cut_edges", "may_match", "same_object"]


@dataclass(frozen=True)
class StitchSettings:
    """Thresholds of the stitching rule (see the module docstring)."""

    iou_threshold: float = DEFAULTS.iou
    containment: float = DEFAULTS.containment
    edge_tolerance: float = DEFAULTS.edge_tolerance
    class_agnostic: bool = False
    # Drop boxes lying this much inside a larger box of another class (minescan.scan.parts);
    # 0: off; None: the model's own setting (a scan resolves it, see minescan.scan.plan).
    drop_parts: float | None = None


def cut_edges(boxes: np.ndarray, tile: Tile, tolerance: float) -> np.ndarray:
    """Which scene-pixel ``boxes`` touch an interior edge of ``tile`` (bool [M])."""
    x0, y0, x1, y1 = boxes.T
    return (
        (tile.interior_left & (x0 - tile.col_off <= tolerance))
        | (tile.interior_top & (y0 - tile.row_off <= tolerance))
        | (tile.interior_right & (tile.col_off + tile.valid_width - x1 <= tolerance))
        | (tile.interior_bottom & (tile.row_off + tile.valid_height - y1 <= tolerance))
    )


def _clip(boxes: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Row-wise intersection of two [M, 4] box arrays (empty ones come out with x1 < x0 or y1 < y0)."""
    return np.concatenate([np.maximum(boxes[:, :2], to[:, :2]), np.minimum(boxes[:, 2:], to[:, 2:])], axis=1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


Flags = Union[np.ndarray, np.bool_, bool]
"""Booleans, one per pair, or one for all (broadcast)."""


def may_match(same_class: Flags, same_tile: Flags, class_agnostic: bool) -> np.ndarray:
    """Which pairs the rule compares at all: one class (any with ``class_agnostic``), and not two boxes
    of one class from one tile (the model has already chosen between those)."""
    return np.logical_and(np.logical_or(same_class, class_agnostic), np.logical_not(np.logical_and(same_class, same_tile)))


def same_object(
    boxes_a: np.ndarray,
    windows_a: np.ndarray,
    cut_a: Flags,
    boxes_b: np.ndarray,
    windows_b: np.ndarray,
    cut_b: Flags,
    settings: StitchSettings,
) -> np.ndarray:
    """The rule's one "same object" test, row-wise over pairs ``(a[k], b[k])`` (bool [M]; rows broadcast).

    True when the boxes agree (IoU >= ``iou_threshold``) inside the common part
    of their windows (no common part: no match), or when a box flagged cut lies
    mostly (>= ``containment`` of its area) inside the other box.  Pass
    ``cut_b`` all False to test the containment of ``a`` only.
    """
    common = _clip(windows_a, windows_b)
    seen_a, seen_b = _clip(boxes_a, common), _clip(boxes_b, common)
    inter_seen = _area(_clip(seen_a, seen_b))
    seen_iou = inter_seen / np.maximum(_area(seen_a) + _area(seen_b) - inter_seen, 1e-9)
    inter = _area(_clip(boxes_a, boxes_b))
    contained = (cut_a & (inter >= settings.containment * _area(boxes_a))) | (
        cut_b & (inter >= settings.containment * _area(boxes_b))
    )
    return (seen_iou >= settings.iou_threshold) | contained


def _intersecting(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), both orders and i == j included, of boxes that intersect, found with an R-tree."""
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    return shapely.STRtree(geoms).query(geoms, predicate="intersects")


def _pairs_matching(boxes, classes, cut, windows, tiles, s: StitchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of boxes that :func:`same_object` calls the same object."""
    i, j = _intersecting(boxes)
    keep = i < j
    i, j = i[keep], j[keep]
    eligible = may_match(classes[i] == classes[j], tiles[i] == tiles[j], s.class_agnostic)
    i, j = i[eligible], j[eligible]
    match = same_object(boxes[i], windows[i], cut[i], boxes[j], windows[j], cut[j], s)
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


@dataclass
class _Object:
    box: np.ndarray
    window: np.ndarray
    score: float
    klass: int
    cut: bool
    tiles: set[int] = field(default_factory=set)
    first: int = -1  # the candidate that started it
    merged: bool = False  # box and window grown by merging cut boxes


class Stitcher:
    """Collects tile detections with :meth:`add`; :meth:`flush` (or :meth:`row_done`) and :meth:`finish` apply the rule.

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

    def row_done(self, row_end: RowEnd) -> int:
        """Tile row ``row_end.row`` is finished: settle what no later row can touch; return how many.

        The next row starts at scene row ``row_end.next_top`` (None after the
        last row: everything settles).  With :meth:`add` and :meth:`finish`
        this makes the stitcher a consumer of the scan's tile stream.
        """
        return self.flush(np.inf if row_end.next_top is None else row_end.next_top)

    def finish(self) -> SceneDetections:
        """Settle everything and return each object once, best score first."""
        self.flush(np.inf)
        objects = sorted(self._settled, key=lambda o: -o.score)
        boxes = np.array([o.box for o in objects], np.float64).reshape(-1, 4)
        classes = np.array([o.klass for o in objects], np.int32)
        whole = ~part_mask(boxes, classes, self.settings.drop_parts or 0.0)
        return SceneDetections(boxes[whole], np.array([o.score for o in objects], np.float32)[whole], classes[whole])

    def _resolve(self, boxes, scores, classes, cut, windows, tiles) -> list[_Object]:
        """The greedy rule of the module docstring over one set of candidates.

        A candidate joins the first object (in order of creation) among those
        holding a box it intersects that :func:`may_match` and
        :func:`same_object` accept, the containment tested for the candidate
        only; else it starts a new object.
        """
        if not len(boxes):
            return []
        s = self.settings
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.lexsort((-areas, -scores, cut))
        # Only boxes that intersect can be the same object: find those pairs once.
        left, right = _intersecting(boxes)
        by_left = np.argsort(left, kind="stable")
        left, right = left[by_left], right[by_left]
        starts = np.searchsorted(left, np.arange(len(boxes) + 1))
        # The rule for every intersecting pair at once; an object still as its first box made it
        # (not merged) is judged from this table, a merged one afresh.
        judged = same_object(boxes[left], windows[left], cut[left], boxes[right], windows[right], np.False_, s)
        owner = np.full(len(boxes), -1)
        objects: list[_Object] = []
        for i in order:
            near = right[starts[i] : starts[i + 1]].tolist()
            verdicts = dict(zip(near, judged[starts[i] : starts[i + 1]].tolist()))
            match = None
            for k in sorted({int(owner[j]) for j in near if owner[j] >= 0}):
                obj = objects[k]
                if not may_match(obj.klass == classes[i], tiles[i] in obj.tiles, s.class_agnostic):
                    continue
                if obj.merged or obj.first not in verdicts:
                    same = same_object(boxes[i : i + 1], windows[i : i + 1], cut[i], obj.box[None], obj.window[None], np.False_, s)[0]
                else:
                    same = verdicts[obj.first]
                if same:
                    match = k
                    break
            if match is None:
                owner[i] = len(objects)
                objects.append(_Object(boxes[i].copy(), windows[i].copy(), float(scores[i]), int(classes[i]), bool(cut[i]), {int(tiles[i])}, int(i)))
                continue
            owner[i] = match
            obj = objects[match]
            obj.tiles.add(int(tiles[i]))
            if cut[i] and obj.cut:
                obj.box = np.concatenate([np.minimum(obj.box[:2], boxes[i][:2]), np.maximum(obj.box[2:], boxes[i][2:])])
                obj.window = np.concatenate([np.minimum(obj.window[:2], windows[i][:2]), np.maximum(obj.window[2:], windows[i][2:])])
                obj.score = max(obj.score, float(scores[i]))
                obj.merged = True
        return objects
