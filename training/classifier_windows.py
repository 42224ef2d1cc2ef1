"""Training windows for the demo tile classifier, cut from generated mining scenes.

A window is ``WINDOW`` x ``WINDOW`` px (640 m at 10 m).  Scenes are rendered
by :func:`training.tiles.render_training_scene` (the writer's strips and DN)
and a window becomes the model's uint8 RGB through
:func:`training.tiles.render_tile`, the code path the demo detector trains
on: the scan's own radiometry with the model's normalisation (a per-band
2-98 % stretch over the whole scene, measured on the scan's own statistics
sample, :func:`scan_percentiles`) and, drawn per window, the radiometric
:class:`training.tiles.Augmentation`.  Without augmentation a scene renders
byte for byte as ``minescan scan`` renders it (:func:`render_scene_rgb`);
through the training path's float formula a window differs from that by at
most one level in about 0.02 % of its pixels.

Labels come only from :func:`minescan.results.window_truth.window_labels`
(mining sites of either class are positive, look-alikes are not in the truth
and so are negatives); windows it calls ambiguous are never drawn.  A batch
mixes, by :class:`WindowMix`: positives (a window over a random mining site,
anywhere it still counts as showing it), hard negatives (a window over a
random look-alike, :meth:`minescan.synthetic.mining.Layout.distractors`,
beside a mining site without touching it, or the brightest of a few random
negatives) and windows anywhere that are not ambiguous.  Each window is flipped and rotated by multiples of 90 degrees at
random, which keeps its label.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from minescan.model.metadata import Normalisation
from minescan.raster.memory import array_source
from minescan.raster.radiometry import Radiometry, percentile_stretch, reflectance_gain
from minescan.raster.scene import Scene
from minescan.results.window_truth import AMBIGUOUS, NEGATIVE, POSITIVE, window_labels
from minescan.synthetic.mining import MiningSpec, plan_scene
from training.tiles import Augmentation, TrainingScene, render_tile, render_training_scene

WINDOW = 64  # px
LABELS = ("other", "mining")  # the classifier's classes, in output order
_CANDIDATES = 24  # windows drawn per try when looking for one of a kind


@dataclass(frozen=True)
class WindowScene:
    """A rendered training scene with its look-alikes' pixel boxes ``distractors`` [D, 4] (x0, y0, x1, y1)."""

    scene: TrainingScene
    distractors: np.ndarray

    @property
    def seed(self) -> int:
        return self.scene.seed


@dataclass(frozen=True)
class WindowMix:
    """Shares of a batch: positives and hard negatives (on look-alikes, beside mining sites, bright); the rest anywhere.

    Bright negatives are the brightest of a few random negative windows: bare
    soil fields, saturated by the stretch and crossed by a road, look most
    like an open pit's benches and haul road, and are common background.
    """

    positive: float = 0.4
    distractor: float = 0.2
    beside: float = 0.1
    bright: float = 0.15

    def kinds(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` kinds (0 anywhere, 1 positive, 2 on a look-alike, 3 beside a site, 4 bright), in the shares given, shuffled."""
        shares = np.array([self.positive, self.distractor, self.beside, self.bright])
        if shares.min() < 0 or shares.sum() > 1:
            raise ValueError(f"window shares must be >= 0 and sum to <= 1, got {shares.tolist()}")
        numbers = np.diff(np.rint(np.concatenate([[0.0], np.cumsum(shares)]) * count).astype(int))  # sums to <= count
        kinds = np.zeros(count, int)
        kinds[:numbers.sum()] = np.repeat([1, 2, 3, 4], numbers)
        return rng.permutation(kinds)


def scan_percentiles(dn: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """[3, 2] each band's stretch percentiles of the DN stack ``dn`` [3, H, W], measured as ``minescan scan`` measures them.

    The stack goes into GDAL's memory file system as the scan's in-memory
    rasters do (:func:`minescan.raster.memory.array_source`) and the scan's
    own :meth:`~minescan.raster.scene.Scene.statistics_sample` and
    :func:`~minescan.raster.radiometry.percentile_stretch` measure it, so the
    sample (the decimation a scene's size calls for, its phase) is the scan's.
    """
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel coordinates are all the sample needs
        with array_source(np.moveaxis(dn, 0, -1), nodata=0, name="training scene") as source:
            with Scene(source.dataset, bands=(1, 2, 3), require_georef=False) as scene:
                sample = scene.statistics_sample()
    radiometry = percentile_stretch(sample.data, ~sample.nodata, normalisation.low, normalisation.high)
    return np.column_stack([radiometry.low, radiometry.high])


def render_window_scene(spec: MiningSpec, normalisation: Normalisation) -> WindowScene:
    """Render ``spec`` (:func:`training.tiles.render_training_scene`) and keep its look-alikes' boxes.

    Under a stretch, the percentiles are the scan's (:func:`scan_percentiles`):
    :func:`training.tiles.render_training_scene` measures them on every other
    pixel from the first, the scan's sample of a 2048 px scene on every other
    pixel from the second, which moves a percentile by a DN now and then.
    """
    scene = render_training_scene(spec, normalisation)
    if normalisation.kind == "stretch":
        scene = dataclasses.replace(scene, percentiles=scan_percentiles(scene.dn, normalisation))
    distractors = np.array([s.box for s in plan_scene(spec).distractors()], np.float64).reshape(-1, 4)
    return WindowScene(scene, distractors)


def _origins_over(box: np.ndarray, count: int, scene: TrainingScene, rng: np.random.Generator, margin: float = 0.0) -> np.ndarray:
    """[count, 2] (col, row) of windows that overlap ``box`` grown by ``margin`` px, clipped to the scene."""
    height, width = scene.shape
    x0, y0, x1, y1 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
    cols = rng.integers(int(np.floor(x0)) - WINDOW + 1, int(np.ceil(x1)), count)
    rows = rng.integers(int(np.floor(y0)) - WINDOW + 1, int(np.ceil(y1)), count)
    return np.column_stack([np.clip(cols, 0, width - WINDOW), np.clip(rows, 0, height - WINDOW)])


def _boxes(origins: np.ndarray) -> np.ndarray:
    return np.column_stack([origins, origins + WINDOW]).astype(np.float64)


def draw_origin(scene: WindowScene, kind: int, rng: np.random.Generator, tries: int = 8) -> tuple[int, int, int]:
    """(col, row, label) of one window of ``kind`` (see :meth:`WindowMix.kinds`); never an ambiguous one.

    A kind that cannot be had in this scene (no mining site, no look-alike,
    or no window of it after ``tries`` rounds) falls back to a window anywhere
    that is not ambiguous.
    """
    s = scene.scene
    height, width = s.shape
    for _ in range(tries):
        if kind == 1 and len(s.boxes):
            origins = _origins_over(s.boxes[rng.integers(len(s.boxes))], _CANDIDATES, s, rng)
            wanted = POSITIVE
        elif kind == 2 and len(scene.distractors):
            origins = _origins_over(scene.distractors[rng.integers(len(scene.distractors))], _CANDIDATES, s, rng)
            wanted = NEGATIVE
        elif kind == 3 and len(s.boxes):
            origins = _origins_over(s.boxes[rng.integers(len(s.boxes))], _CANDIDATES, s, rng, margin=WINDOW)
            wanted = NEGATIVE
        else:
            origins = np.column_stack([rng.integers(0, width - WINDOW + 1, _CANDIDATES),
                                       rng.integers(0, height - WINDOW + 1, _CANDIDATES)])
            wanted = NEGATIVE if kind == 4 else None
        labels = window_labels(_boxes(origins), s.boxes)
        if kind == 4:  # the brightest negative candidate first
            brightness = [s.dn[:, r:r + WINDOW:4, c:c + WINDOW:4].mean() for c, r in origins]
            order = np.argsort(brightness)[::-1]
            origins, labels = origins[order], labels[order]
        hits = np.flatnonzero(labels == wanted) if wanted is not None else np.flatnonzero(labels != AMBIGUOUS)
        if len(hits):
            i = hits[0]
            return int(origins[i, 0]), int(origins[i, 1]), int(labels[i])
    if kind != 0:
        return draw_origin(scene, 0, rng, tries)
    raise ValueError(f"scene {s.seed}: no unambiguous {WINDOW} px window found")


def orient(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` [S, S, C] rotated by a random multiple of 90 degrees and flipped one time in two."""
    image = np.rot90(image, int(rng.integers(4)))
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def window_image(scene: WindowScene, col: int, row: int, normalisation: Normalisation, change: Augmentation,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 [WINDOW, WINDOW, 3] of the window at ``col, row`` under ``change`` (:func:`training.tiles.render_tile`)."""
    s = scene.scene
    return render_tile(s, s.dn[:, row:row + WINDOW, col:col + WINDOW], normalisation, change, rng)


def sample_windows(scenes: list[WindowScene], count: int, rng: np.random.Generator, normalisation: Normalisation,
                   mix: WindowMix = WindowMix(), augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` training windows: uint8 images [N, WINDOW, WINDOW, 3], labels int32 [N] (1 mining), kinds [N]."""
    kinds = mix.kinds(count, rng)
    images = np.empty((count, WINDOW, WINDOW, 3), np.uint8)
    labels = np.empty(count, np.int32)
    for i, kind in enumerate(kinds):
        scene = scenes[int(rng.integers(len(scenes)))]
        col, row, labels[i] = draw_origin(scene, int(kind), rng)
        change = Augmentation.draw(rng) if augment else Augmentation.none()
        images[i] = orient(window_image(scene, col, row, normalisation, change, rng), rng)
    return images, labels, kinds


def cut_windows(rgb: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """uint8 [M, WINDOW, WINDOW, 3] of the pixel boxes ``windows`` [M, 4] of a rendered scene ``rgb`` [H, W, 3]."""
    out = np.empty((len(windows), WINDOW, WINDOW, 3), np.uint8)
    for i, (x0, y0, _, _) in enumerate(windows.astype(int)):
        out[i] = rgb[y0:y0 + WINDOW, x0:x0 + WINDOW]
    return out


def render_scene_rgb(scene: WindowScene, normalisation: Normalisation) -> np.ndarray:
    """The whole training scene as ``minescan scan`` renders it (no augmentation): uint8 [H, W, 3].

    The scan's own :class:`~minescan.raster.radiometry.Radiometry` on the
    uint16 DN (its lookup tables), with the scene's stretch percentiles.
    :func:`window_image` without augmentation renders the same windows through
    the training path (float32 formula); the two differ by at most one level
    in about 0.02 % of pixels (float rounding at level boundaries).
    """
    s = scene.scene
    if normalisation.kind == "stretch":
        radiometry = Radiometry(tuple(s.percentiles[:, 0]), tuple(s.percentiles[:, 1]))
    else:
        radiometry = reflectance_gain(3)
    return radiometry.apply(s.dn)
