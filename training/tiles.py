"""Training tiles cut from generated mining scenes, normalised and augmented as new imagery demands.

Each training scene is rendered in memory exactly as
:func:`minescan.synthetic.mining.write_mining_scene` writes it (the same
strips, the same DN) and kept as DN of B04, B03, B02.  A tile becomes the
model's uint8 RGB through the scan's own radiometry
(:mod:`minescan.raster.radiometry`) with the model's normalisation
(:class:`Normalisation`): ``gain`` (the fixed true-colour gain) or
``stretch`` (each band's scene-wide low/high percentile to 0/255, what
``minescan scan`` does for a model whose recipe says so).

Radiometric augmentation (``augment=True``), drawn per tile, acts on the
*scene*, before the normalisation is measured, as new imagery would:
brightness gain, haze (transmission and path radiance), per-band gains and
offsets, sensor noise and blur; then a small per-band jitter of the
normalised levels stands for the difference between scene contents.  Under
a stretch, the scene's percentiles move with a per-band affine change
exactly (``P(g r + o) = g P(r) + o``), so they are computed once per scene
and transformed per tile.  The transforms ``minescan evaluate --robustness``
reports beyond these (gamma, contrast, JPEG-like compression,
misregistration) are never trained on.

A tile is centred near a random site (mining site or distractor, so the model
sees look-alikes up close) or, one time in five, anywhere.  Truth boxes cut
by the tile edge stay when at least :data:`MIN_VISIBLE` of their area is
inside, else they are dropped.  Tiles are flipped and rotated by multiples of
90 degrees at random, which keeps boxes exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.model.metadata import Normalisation
from minescan.raster.radiometry import Radiometry, reflectance_gain
from minescan.robustness.perturbations import gaussian_blur
from minescan.synthetic.mining import MiningSpec, plan_scene, render_strip

MAX_TRUTH = 24  # truth boxes per tile, padded with class 0
MIN_VISIBLE = 0.6
RGB_BANDS = (2, 1, 0)  # B04, B03, B02 of the B02, B03, B04, B08 stack


@dataclass(frozen=True)
class TrainingScene:
    """A scene: DN of B04, B03, B02 [3, H, W] uint16, truth pixel boxes [M, 4] (x0, y0, x1, y1), classes [M], site boxes [S, 4].

    ``percentiles`` [3, 2]: each band's ``low``/``high`` stretch percentile over the whole scene (DN).
    """

    dn: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    sites: np.ndarray
    percentiles: np.ndarray
    seed: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.dn.shape[1], self.dn.shape[2]


@dataclass(frozen=True)
class Tile:
    """A training example: uint8 image [S, S, 3], truth [MAX_TRUTH, 4] normalized (ymin, xmin, ymax, xmax), classes [MAX_TRUTH]."""

    image: np.ndarray
    truth: np.ndarray
    classes: np.ndarray


def render_training_scene(spec: MiningSpec, normalisation: Normalisation) -> TrainingScene:
    """Render ``spec`` in memory, strip by strip as the writer does; measure its stretch percentiles."""
    layout = plan_scene(spec)
    dn = np.concatenate(
        [np.moveaxis(render_strip(layout, top, min(spec.strip, spec.height - top))[..., list(RGB_BANDS)], -1, 0)
         for top in range(0, spec.height, spec.strip)], axis=1,
    )
    valid = dn[:, ::2, ::2].reshape(3, -1)
    valid = valid[:, (valid != 0).any(axis=0)]
    percentiles = np.percentile(valid, [normalisation.low, normalisation.high], axis=1).T
    truth = layout.truth()
    sites = np.array([s.box for s in layout.sites], np.float64).reshape(-1, 4)
    return TrainingScene(dn, truth.boxes, truth.classes, sites, percentiles, spec.seed)


@dataclass(frozen=True)
class Augmentation:
    """One tile's radiometric change: reflectance ``r * gain + offset`` per band, noise sigma, blur sigma, level jitter."""

    gain: np.ndarray  # [3]
    offset: np.ndarray  # [3], reflectance
    noise: float
    blur: float
    level_gain: np.ndarray  # [3], on the normalised levels (about 128)
    level_offset: np.ndarray  # [3]

    @classmethod
    def none(cls) -> "Augmentation":
        return cls(np.ones(3), np.zeros(3), 0.0, 0.0, np.ones(3), np.zeros(3))

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Augmentation":
        """A random change: clear one time in three, else brightness x0.5-1.6, haze one time in two
        (transmission 0.55-1, path radiance 0-0.15), per-band gains 0.8-1.2 and offsets +-0.015,
        noise sigma up to 0.012 (one time in two), blur sigma 0.5-1.5 px (one time in four),
        and a per-band jitter of the normalised levels (gain 0.95-1.05, offset +-5)."""
        if rng.random() < 1 / 3:
            return cls.none()
        gain = np.full(3, rng.uniform(0.5, 1.6)) * rng.uniform(0.8, 1.2, 3)
        offset = rng.uniform(-0.015, 0.015, 3)
        if rng.random() < 0.5:
            transmission = rng.uniform(0.55, 1.0)
            gain, offset = gain * transmission, offset + rng.uniform(0.0, 0.15)
        noise = rng.uniform(0.0, 0.012) if rng.random() < 0.5 else 0.0
        blur = rng.uniform(0.5, 1.5) if rng.random() < 0.25 else 0.0
        return cls(gain, offset, noise, blur, rng.uniform(0.95, 1.05, 3), rng.uniform(-5, 5, 3))


def render_tile(scene: TrainingScene, dn: np.ndarray, normalisation: Normalisation, change: Augmentation,
                rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB [S, S, 3] of the DN tile ``dn`` [3, S, S] of ``scene`` under ``change`` and ``normalisation``."""
    scale = DEFAULTS.scale
    r = dn.astype(np.float64) / scale * change.gain[:, None, None] + change.offset[:, None, None]
    if change.noise:
        r += rng.normal(0.0, change.noise, r.shape)
    if change.blur:
        r = gaussian_blur(r, change.blur)
    values = np.clip(np.rint(r * scale), 0, 65535)  # what a uint16 product would hold
    values[:, (dn == 0).all(axis=0)] = 0
    if normalisation.kind == "stretch":
        low, high = (scene.percentiles[:, i] / scale * change.gain + change.offset for i in (0, 1))
        radiometry = Radiometry(tuple(low * scale), tuple(high * scale))
    else:
        radiometry = reflectance_gain(3)
    image = radiometry.apply(values.astype(np.float32))
    if np.any(change.level_gain != 1) or np.any(change.level_offset != 0):
        levels = (image.astype(np.float32) - 128) * change.level_gain + 128 + change.level_offset
        image = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    return image


def _crop_origin(scene: TrainingScene, size: int, rng: np.random.Generator) -> tuple[int, int]:
    height, width = scene.shape
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


def sample_tile(scene: TrainingScene, size: int, rng: np.random.Generator, normalisation: Normalisation,
                augment: bool = True) -> Tile:
    """One augmented ``size`` x ``size`` tile of ``scene`` with its visible truth."""
    col, row = _crop_origin(scene, size, rng)
    change = Augmentation.draw(rng) if augment else Augmentation.none()
    image = render_tile(scene, scene.dn[:, row : row + size, col : col + size], normalisation, change, rng)
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
