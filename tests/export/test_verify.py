import numpy as np
import pytest

from minescan.export.detections import synthetic_tiles
from minescan.model.detections import BatchDetections
from minescan.export.verify import compare_detections


def _detections(boxes, scores, classes) -> BatchDetections:
    boxes = np.asarray(boxes, np.float32).reshape(1, -1, 4)
    return BatchDetections(boxes, np.asarray(scores, np.float32)[None], np.asarray(classes)[None], np.array([len(scores)]))


REFERENCE = _detections([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.8], [0.2, 0.6, 0.4, 0.7]], [0.9, 0.6, 0.02], [1, 2, 1])


def test_identical_sets_pass_with_zero_differences():
    report = compare_detections(REFERENCE, REFERENCE)
    assert (report.compared, report.matched, report.max_box_diff, report.max_score_diff) == (2, 2, 0.0, 0.0)
    assert report.passed and report.agreement == 1.0


def test_a_box_moved_beyond_tolerance_is_unmatched():
    moved = _detections(REFERENCE.boxes[0] + [[0, 0, 0, 0.002], [0, 0, 0, 0], [0, 0, 0, 0]], [0.9, 0.6, 0.02], [1, 2, 1])
    report = compare_detections(REFERENCE, moved)
    assert (report.matched, report.compared, report.unmatched_candidates) == (1, 2, 1)
    assert not report.passed
    assert compare_detections(REFERENCE, moved, box_tolerance=0.003).passed


def test_same_box_other_class_is_a_class_mismatch():
    relabeled = _detections(REFERENCE.boxes[0], [0.9, 0.6, 0.02], [2, 2, 1])
    report = compare_detections(REFERENCE, relabeled)
    assert (report.matched, report.class_mismatches) == (1, 1)
    assert not report.passed


def test_score_drift_beyond_tolerance_fails_even_when_boxes_match():
    drifted = _detections(REFERENCE.boxes[0], [0.9, 0.603, 0.02], [1, 2, 1])
    report = compare_detections(REFERENCE, drifted)
    assert report.matched == 2 and report.max_score_diff == pytest.approx(0.003, abs=1e-6)
    assert not report.passed


def test_nothing_above_the_floor_does_not_pass():
    report = compare_detections(REFERENCE, REFERENCE, score_floor=0.95)
    assert report.compared == 0 and not report.passed
    assert "FAIL" in report.format()


def test_synthetic_tiles_are_seeded_textured_uint8():
    tiles = synthetic_tiles(3, (96, 80), seed=5)
    assert tiles.shape == (3, 96, 80, 3) and tiles.dtype == np.uint8
    assert np.array_equal(tiles, synthetic_tiles(3, (96, 80), seed=5))
    assert not np.array_equal(tiles, synthetic_tiles(3, (96, 80), seed=6))
    assert tiles.std() > 20  # texture everywhere: no flat areas with tied scores
