"""Tied scores in compare_detections: swaps at the max_detections cutoff are not disagreements (pure numpy)."""

import numpy as np

from minescan.export.agreement import PrecisionReport
from minescan.export.verify import compare_detections
from minescan.model.detections import BatchDetections

X = [0.2, 0.2, 0.4, 0.4]  # a box two classes tie on
Y = [0.6, 0.1, 0.8, 0.3]
Z = [0.1, 0.6, 0.3, 0.9]
W = [0.5, 0.5, 0.7, 0.7]
S = 0.4  # a tied score: S and S + 1e-7 differ by float noise (score tolerance 1e-3)


def _tile(rows, capacity: int) -> BatchDetections:
    """One tile of ``(class, score, box)`` rows, padded to ``capacity`` (== len(rows): full, truncated there)."""
    boxes = np.zeros((1, capacity, 4), np.float32)
    scores = np.zeros((1, capacity), np.float32)
    classes = np.zeros((1, capacity), np.int64)
    for k, (cls, score, box) in enumerate(rows):
        boxes[0, k], scores[0, k], classes[0, k] = box, score, cls
    return BatchDetections(boxes, scores, classes, np.array([len(rows)]))


def _counts(report):
    return report.matched, report.tie_swaps, report.class_mismatches, report.unmatched_candidates


def test_a_tied_pair_on_one_box_in_swapped_order_matches_as_it_is():
    # (a) A (class 1, S) and B (class 2, S + 1e-7) on box X; the candidate ranks them the other way round.
    # Candidates are taken by class and box, never by rank: both match, nothing to excuse.
    reference = _tile([(1, 0.9, Y), (2, S + 1e-7, X), (1, S, X)], capacity=4)
    candidate = _tile([(1, 0.9, Y), (1, S + 1e-7, X), (2, S, X)], capacity=4)
    report = compare_detections(reference, candidate)
    assert report.passed and _counts(report) == (3, 0, 0, 0) and report.agreement == 1.0


def test_a_tied_pair_on_one_box_swapped_across_the_cutoff_is_a_tie_swap():
    # (a) at the cutoff (the export): the tiles are full at 2, the pair ties for the last place;
    # TF kept B (class 2), ONNX Runtime kept A (class 1) on the same box. It used to read as a class mismatch.
    reference = _tile([(1, 0.9, Y), (2, S + 1e-7, X)], capacity=2)
    candidate = _tile([(1, 0.9, Y), (1, S + 1e-7, X)], capacity=2)
    report = compare_detections(reference, candidate)
    assert report.passed and _counts(report) == (1, 1, 0, 0)
    assert report.compared == 2 and report.agreeing == 2 and report.agreement == 1.0
    assert report.max_score_diff == 0.0  # the swapped pair is two detections: left out of the maxima
    text = report.format()
    assert "parity PASS: 2/2 detections matched" in text and "tie swaps 1" in text and "class mismatches 0" in text


def test_a_different_detection_kept_at_the_cutoff_is_a_tie_swap():
    # (b) the reference keeps A last (full at 3); the candidate keeps B, elsewhere, of a tied score.
    reference = _tile([(1, 0.9, Y), (2, 0.7, Z), (1, 0.3, X)], capacity=3)
    candidate = _tile([(1, 0.9, Y), (2, 0.7, Z), (2, 0.3 + 5e-8, W)], capacity=3)
    report = compare_detections(reference, candidate)
    assert report.passed and _counts(report) == (2, 1, 0, 0) and report.agreeing == report.compared == 3
    assert "tie swaps 1 (tied at the candidate's max_detections cutoff, counted as matched)" in report.format()


def test_no_tie_swap_unless_the_candidate_was_cut_and_its_cutoff_ties():
    reference = _tile([(1, 0.9, Y), (2, 0.7, Z), (1, 0.3, X)], capacity=3)
    # Room left in the candidate (padded to 4): nothing truncated it, so A is simply missing.
    roomy = compare_detections(reference, _tile([(1, 0.9, Y), (2, 0.7, Z), (2, 0.3 + 5e-8, W)], capacity=4))
    assert not roomy.passed and _counts(roomy) == (2, 0, 0, 1)
    # Full, but the candidate's cutoff (0.31) does not tie with A's 0.3: A dropped out for real.
    clear = compare_detections(reference, _tile([(1, 0.9, Y), (2, 0.7, Z), (2, 0.31, W)], capacity=3))
    assert not clear.passed and _counts(clear) == (2, 0, 0, 1)
    # Full and tied at the cutoff, but what took A's place is a candidate-only detection of a clear
    # score (0.8): no tied detection was kept instead of A, so A is a disagreement.
    reference = _tile([(1, 0.9, Y), (2, 0.3005, Z), (1, 0.3, X)], capacity=3)
    pushed = compare_detections(reference, _tile([(2, 0.8, W), (1, 0.9, Y), (2, 0.3005, Z)], capacity=3))
    assert not pushed.passed and _counts(pushed) == (2, 0, 0, 1)


def test_a_clear_score_under_another_class_is_still_a_class_mismatch():
    # (c) A scores 0.6, tied with nothing at any cutoff; the candidate calls it class 2.
    for capacity, tail in ((3, []), (4, [(1, 0.2, Z)])):  # room left: nothing cut
        reference = _tile([(1, 0.9, Y), (1, 0.6, X), *tail], capacity=capacity)
        candidate = _tile([(1, 0.9, Y), (2, 0.6, X), *tail], capacity=capacity)
        report = compare_detections(reference, candidate)
        assert not report.passed and report.tie_swaps == 0 and report.class_mismatches == 1
    # Full (cut at 3) with the cutoff at 0.2: 0.6 does not tie with it.
    full = compare_detections(_tile([(1, 0.9, Y), (1, 0.6, X), (1, 0.2, Z)], capacity=3),
                              _tile([(1, 0.9, Y), (2, 0.6, X), (1, 0.2, Z)], capacity=3))
    assert not full.passed and _counts(full) == (2, 0, 1, 1) and "class mismatches 1" in full.format()


def test_a_tie_swap_that_also_moves_a_box_is_a_disagreement():
    # (d) the tied pair of (a) swaps ranks, and B's box also moves by 0.01 (tolerance 1e-3).
    reference = [(1, 0.9, Y), (2, S + 1e-7, X), (1, S, X)]
    moved = [(1, 0.9, Y), (1, S + 1e-7, X), (2, S, np.add(X, [0, 0, 0.01, 0]))]
    report = compare_detections(_tile(reference, capacity=4), _tile(moved, capacity=4))
    assert not report.passed and _counts(report) == (2, 0, 0, 1)
    # Full tiles too, when the pair is not at the cutoff (the last place holds 0.1).
    tail = [(1, 0.1, Z)]
    full = compare_detections(_tile(reference + tail, capacity=4), _tile(moved + tail, capacity=4))
    assert not full.passed and _counts(full) == (3, 0, 0, 1)


def test_precision_report_counts_tie_swaps_as_reproduced():
    parity = compare_detections(_tile([(1, 0.9, Y), (2, S + 1e-7, X)], capacity=2),
                                _tile([(1, 0.9, Y), (1, S + 1e-7, X)], capacity=2), score_floor=0.0, min_agreement=0.95)
    text = PrecisionReport("int8", parity, 0.02, 0.01).format()
    assert "int8 vs fp32 PASS: recall 100.0% (2/2 FP32 detections" in text
    assert "0 int8-only, 1 tie swap(s) at the max_detections cutoff counted as reproduced" in text
