"""Box noise as a trained model shows it: each tile places an object's edges a few pixels differently.

A real detector does not report the same box for an object in two
overlapping tiles: the context differs, so every edge moves by a few
pixels, and an object cut by the tile edge is reported with its cut edge
on, or a little inside, the tile edge (never outside the tile).
:func:`jitter` applies that to one tile's boxes; :class:`NoisyDetector`
wraps any :class:`~minescan.engine.detector.Detector` (in the tests, the
exact square detector) so that a whole scan sees it.
"""

from __future__ import annotations

import zlib

import numpy as np

from minescan.model.detections import TileDetections


def jitter(boxes: np.ndarray, noise: float | np.ndarray, rng: np.random.Generator, width: float, height: float,
           *, integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``boxes`` [M, 4] (tile pixels) with each edge moved by an independent uniform amount in [-noise, noise].

    ``noise`` is one amplitude or one per box.  Boxes are clipped to the tile
    (``width`` x ``height``): an edge lying on the tile edge moves inward by at
    most ``noise``, never outward.  ``integer`` rounds the moves to whole
    pixels.  Returns (boxes, kept): boxes left empty by the noise are dropped, as
    a model reports no empty box; ``kept`` says which input boxes survived.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    amplitude = np.broadcast_to(np.asarray(noise, np.float64).reshape(-1, 1), (len(boxes), 1))
    moves = rng.uniform(-1.0, 1.0, boxes.shape) * amplitude
    if integer:
        moves = np.round(moves)
    moved = np.clip(boxes + moves, 0.0, [width, height, width, height])
    kept = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return moved[kept], kept


class NoisyDetector:
    """A detector whose boxes are ``detector``'s with every edge moved by up to ``noise`` px (see :func:`jitter`).

    The moves are whole pixels drawn from a generator seeded with ``seed`` and
    the tile's own pixels, so a scan gives the same boxes whatever the order
    in which concurrent inference calls see the tiles.
    """

    def __init__(self, detector, noise: float = 3.0, seed: int = 0) -> None:
        self.inner = detector
        self.noise = noise
        self.seed = seed
        self.backend = detector.backend
        self.notice = detector.notice
        self.concurrency = detector.concurrency
        self.signature = detector.signature
        self.metadata = detector.metadata

    def detect(self, tiles: np.ndarray, score_threshold: float = 0.0) -> list[TileDetections]:
        found = self.inner.detect(tiles, score_threshold)
        height, width = tiles.shape[1:3]
        noisy = []
        for tile, detections in zip(tiles, found):
            rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(tile).data)])
            boxes, kept = jitter(detections.boxes, self.noise, rng, width, height, integer=True)
            noisy.append(TileDetections(boxes, detections.scores[kept], detections.classes[kept]))
        return noisy
