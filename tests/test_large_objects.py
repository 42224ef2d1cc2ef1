"""Objects larger than the overlap, scanned end to end with model-like box noise (issue 12, item 1).

A generated scene holds nine bright rectangles of 150-700 px (several tiles
across, cut by tile edges in both directions, some edges a pixel or three off
a tile edge) and seven small ones (35-60 px, some across tile borders).  The
known-answer square detector finds each rectangle's visible part exactly;
:class:`testkit.noisy.NoisyDetector` then moves every box edge by up to 3 px,
independently in each tile, as a trained model does.  The scan must report
every object once, with its class, every edge within the 3 px noise of the
truth (so IoU >= 0.92 for the large ones), and nothing else.
"""

from __future__ import annotations

import numpy as np
import pytest

from minescan.engine import load_detector
from minescan.results.evaluation import iou_matrix
from minescan.scan.scanner import Scanner
from minescan.synthetic.scene import Truth
from testkit.noisy import NoisyDetector

NOISE = 3
# Tiles of 256 px, overlap 64: tiles start at 0, 192, 384, ... and end at 256, 448, 640, ...
LARGE = [
    (100, 100, 700, 400),  # 600 x 300: a 4 x 2 block of tiles
    (962, 150, 1112, 300),  # 150 px, left edge 2 px inside the tile starting at 960
    (1200, 60, 1900, 210),  # 700 x 150
    (2110, 200, 2410, 900),  # 300 x 700, a 2 px sliver in the tiles ending at 2112
    (150, 600, 450, 1300),  # 300 x 700
    (600, 770, 1250, 1100),  # 650 x 330, top edge 2 px below the tiles starting at 768
    (1400, 450, 1850, 770),  # 450 x 320, bottom edge 2 px into the tiles starting at 768
    (1400, 1000, 1923, 1640),  # 523 x 640, a 3 px sliver in the tiles starting at 1920
    (300, 1500, 1000, 1700),  # 700 x 200
]
SMALL = [
    (800, 500, 840, 540),
    (1100, 1300, 1150, 1340),
    (2200, 1200, 2260, 1240),
    (700, 1850, 735, 1890),
    (1250, 400, 1290, 436),
    (430, 1400, 465, 1435),  # across the border band 384-448
    (1530, 1775, 1570, 1810),  # across the tile row ending at 1792
]
CLASSES = [1, 2, 1, 2, 1, 2, 1, 2, 1] + [2, 1, 2, 1, 2, 1, 2]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from minescan.synthetic.scene import SceneSpec, write_scene

    path = tmp_path_factory.mktemp("large") / "large.tif"
    truth = write_scene(path, SceneSpec(width=2500, height=2000, tile=256, overlap=64), Truth.of(LARGE + SMALL, CLASSES))
    return path, truth


@pytest.fixture(scope="module")
def detector(square_model):
    return load_detector(square_model)


def found_against_truth(detections, truth, noise):
    """(per truth object: how many detections lie within ``noise`` px on every edge with its class, unmatched detections)."""
    error = np.abs(detections.boxes[:, None, :] - truth.boxes[None, :, :]).max(axis=2)
    close = (error <= noise) & (detections.classes[:, None] == truth.classes[None, :])
    return close.sum(axis=0), int((close.sum(axis=1) == 0).sum())


@pytest.mark.parametrize("tile,overlap,seed", [(256, 64, 0), (256, 64, 1), (256, 64, 2), (512, 128, 3)])
def test_large_objects_cut_by_tiles_are_found_once_whole_despite_box_noise(scene, detector, tile, overlap, seed):
    path, truth = scene
    noisy = NoisyDetector(detector, noise=NOISE, seed=seed)
    result = Scanner(noisy).scan(path, bands=(3, 2, 1), tile=tile, overlap=overlap)
    found = result.detections
    counts, false_positives = found_against_truth(found, truth, NOISE)
    assert counts.tolist() == [1] * len(truth.boxes) and false_positives == 0, (counts.tolist(), found.boxes.tolist())
    assert len(found) == len(truth.boxes)
    ious = iou_matrix(found.boxes, truth.boxes[: len(LARGE)])
    assert (ious.max(axis=0) >= 0.9).all()


def test_the_noise_really_moves_the_boxes(scene, detector):
    # Without this the test above would pass on exact boxes: the noisy scan differs from the exact one.
    path, truth = scene
    exact = Scanner(detector).scan(path, bands=(3, 2, 1), tile=256, overlap=64).detections
    noisy = Scanner(NoisyDetector(detector, noise=NOISE, seed=0)).scan(path, bands=(3, 2, 1), tile=256, overlap=64).detections
    assert sorted(map(tuple, exact.boxes.tolist())) == sorted(map(tuple, truth.boxes.tolist()))
    error = np.abs(noisy.boxes[:, None, :] - truth.boxes[None, :, :]).max(axis=2).min(axis=1)
    assert (error > 0).sum() >= len(truth.boxes) // 2
