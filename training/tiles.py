"""Training tiles cut from generated mining scenes.

Each training scene is rendered in memory exactly as
:func:`minescan.synthetic.mining.write_mining_scene` writes it (the same
strips, the same DN) and turned into the model's uint8 RGB with the scan's
own radiometry (B04, B03, B02 at the default true-colour gain), so the model
trains on what ``minescan scan`` will feed it.

A tile is centred near a random site (mining site or distractor, so the model
sees look-alikes up close) or, one time in five, anywhere.  Truth boxes cut
by the tile edge stay when at least :data:`MIN_VISIBLE` of their area is
inside, else they are dropped.  Tiles are flipped and rotated by multiples of
90 degrees at random, which keeps boxes exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minescan.synthetic.mining import MiningSpec, plan_scene, render_strip
from minescan.raster.radiometry import reflectance_gain

MAX_TRUTH = 24  # truth boxes per tile, padded with class 0
MIN_VISIBLE = 0.6
RGB_BANDS = (2, 1, 0)  # B04, B03, B02 of the B02, B03, B04, B08 stack


@dataclass(frozen=True)
class TrainingScene:
    """A rendered scene: uint8 RGB [H, W, 3], truth pixel boxes [M, 4] (x0, y0, x1, y1), classes [M], site boxes [S, 4]."""

    rgb: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    sites: np.ndarray


@dataclass(frozen=True)
class Tile:
    """A training example: uint8 image [S, S, 3], truth [MAX_TRUTH, 4] normalized (ymin, xmin, ymax, xmax), classes [MAX_TRUTH]."""

    image: np.ndarray
    truth: np.ndarray
    classes: np.ndarray


def render_training_scene(spec: MiningSpec) -> TrainingScene:
    """Render ``spec`` in memory, strip by strip as the writer does, through the scan's radiometry."""
    layout = plan_scene(spec)
    radiometry = reflectance_gain(len(RGB_BANDS))
    rgb = np.concatenate(
        [
            radiometry.apply(np.moveaxis(render_strip(layout, top, min(spec.strip, spec.height - top))[..., list(RGB_BANDS)], -1, 0))
            for top in range(0, spec.height, spec.strip)
        ]
    )
    truth = layout.truth()
    sites = np.array([s.box for s in layout.sites], np.float64).reshape(-1, 4)
    return TrainingScene(rgb, truth.boxes, truth.classes, sites)


def _crop_origin(scene: TrainingScene, size: int, rng: np.random.Generator) -> tuple[int, int]:
    height, width = scene.rgb.shape[:2]
    if len(scene.sites) and rng.random() < 0.8:
        x0, y0, x1, y1 = scene.sites[rng.integers(len(scene.sites))]
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.35, 0.35) * size, (y0 + y1) / 2 + rng.uniform(-0.35, 0.35) * size
        col, row = int(cx - size / 2), int(cy - size / 2)
    else:
        col, row = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
    return int(np.clip(col, 0, width - size)), int(np.clip(row, 0, height - size))


def _augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random rot90 and flip of a square image and its pixel boxes (x0, y0, x1, y1)."""
    size = image.shape[0]
    for _ in range(int(rng.integers(4))):  # rotate 90 degrees counter-clockwise: (x, y) -> (y, size - x)
        image = np.rot90(image)
        boxes = np.stack([boxes[:, 1], size - boxes[:, 2], boxes[:, 3], size - boxes[:, 0]], 1)
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    return np.ascontiguousarray(image), boxes


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def sample_tile(scene: TrainingScene, size: int, rng: np.random.Generator) -> Tile:
    """One augmented ``size`` x ``size`` tile of ``scene`` with its visible truth."""
    col, row = _crop_origin(scene, size, rng)
    image = scene.rgb[row : row + size, col : col + size]
    shifted = scene.boxes - np.array([col, row, col, row], np.float64)
    clipped = np.clip(shifted, 0, size)
    keep = _area(clipped) >= MIN_VISIBLE * _area(shifted)
    image, boxes = _augment(image, clipped[keep], rng)
    classes = scene.classes[keep]
    if len(boxes) > MAX_TRUTH:
        raise ValueError(f"{len(boxes)} truth boxes in one tile, more than MAX_TRUTH={MAX_TRUTH}; use smaller tiles")
    truth = np.zeros((MAX_TRUTH, 4), np.float32)
    truth[: len(boxes)] = boxes[:, [1, 0, 3, 2]] / size
    padded = np.zeros(MAX_TRUTH, np.int32)
    padded[: len(classes)] = classes
    return Tile(image, truth, padded)
