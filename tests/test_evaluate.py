"""``minescan evaluate``: known precision, recall and AP on hand-made detections and truth."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
from rasterio.transform import from_origin

from minescan.cli.evaluate import add_parser
from minescan.results.evaluation import average_precision, evaluate
from minescan.results.read import ResultFileError, read_result_file
from minescan.results.writers import write_detections
from minescan.scan.stitch import SceneDetections

LABELS = {1: "illegal_mining", 2: "legal_mining"}
TRANSFORM = from_origin(600000.0, 800000.0, 10.0, 10.0)
CRS = "EPSG:32630"
TRUTH = [(10, 10, 50, 40), (100, 100, 200, 190), (300, 20, 340, 70)]
TRUTH_CLASSES = [1, 2, 1]


def _write(path, boxes, classes, scores=None):
    detections = SceneDetections(
        np.array(boxes, float).reshape(-1, 4), np.array(scores or [1.0] * len(boxes), float), np.array(classes, np.int32)
    )
    return write_detections(path, detections, transform=TRANSFORM, crs=CRS, labels=LABELS, scene="scene.tif")


def _evaluate_files(detections, truth, *options: str, capsys) -> str:
    parser = argparse.ArgumentParser(prog="minescan")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", str(detections), str(truth), *options])
    assert args.handler(args) == 0
    return capsys.readouterr().out


def _row(output: str, label: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(label))


def test_average_precision_all_point_interpolation():
    # ranks: TP FP TP FP TP over 3 objects; precision 1, .5, .667, .5, .6 at recall 1/3, 1/3, 2/3, 2/3, 1
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1], bool), truth=3)
    assert ap == pytest.approx((1.0 + 2 / 3 + 0.6) / 3)
    assert average_precision(np.array([0.9]), np.array([True]), truth=2) == pytest.approx(0.5)
    assert average_precision(np.array([]), np.array([], bool), truth=2) == 0.0
    assert np.isnan(average_precision(np.array([0.9]), np.array([False]), truth=0))


def test_perfect_match_missing_object_false_positive_and_class_swap():
    truth = np.array(TRUTH, float)
    classes = np.array(TRUTH_CLASSES)
    perfect = evaluate(truth, np.ones(3), classes, truth, classes)
    assert perfect.mean_average_precision == 1.0
    assert all(c.precision == c.recall == 1.0 for c in perfect.classes)

    missing = evaluate(truth[:2], np.ones(2), classes[:2], truth, classes)
    illegal = missing.classes[0]
    assert (illegal.truth, illegal.true_positives, illegal.recall, illegal.precision) == (2, 1, 0.5, 1.0)
    assert illegal.average_precision == pytest.approx(0.5)

    boxes = np.vstack([truth, [[500, 500, 540, 540]]])
    ranked_first = evaluate(boxes, np.array([0.8, 0.8, 0.8, 0.9]), np.array([1, 2, 1, 1]), truth, classes)
    assert ranked_first.classes[0].precision == pytest.approx(2 / 3)
    assert ranked_first.classes[0].average_precision == pytest.approx(2 / 3)  # precision 1/2, 2/3 at recall 1/2, 1; interpolated 2/3
    ranked_last = evaluate(boxes, np.array([0.8, 0.8, 0.8, 0.1]), np.array([1, 2, 1, 1]), truth, classes)
    assert ranked_last.classes[0].average_precision == 1.0  # a false positive below every hit costs no AP

    swapped = evaluate(truth, np.ones(3), np.array([1, 1, 1]), truth, classes)  # legal site called illegal
    illegal, legal = swapped.classes
    assert (illegal.false_positives, illegal.recall, legal.recall, legal.average_precision) == (1, 1.0, 0.0, 0.0)


def test_threshold_selects_for_precision_and_recall_but_not_for_ap():
    truth = np.array(TRUTH, float)
    classes = np.array(TRUTH_CLASSES)
    result = evaluate(truth, np.array([0.9, 0.9, 0.3]), classes, truth, classes, score_threshold=0.5)
    illegal = result.classes[0]
    assert (illegal.detections, illegal.recall, illegal.average_precision) == (1, 0.5, 1.0)


def test_duplicates_are_false_positives():
    truth = np.array(TRUTH[:1], float)
    result = evaluate(np.vstack([truth, truth + 1]), np.array([0.9, 0.8]), np.array([1, 1]), truth, np.array([1]))
    assert (result.classes[0].true_positives, result.classes[0].false_positives) == (1, 1)


def test_files_in_different_crs_match_exactly(tmp_path, capsys):
    truth = _write(tmp_path / "truth.gpkg", TRUTH, TRUTH_CLASSES)  # UTM
    detections = _write(tmp_path / "detections.geojson", TRUTH, TRUTH_CLASSES, [0.9, 0.8, 0.7])  # WGS84
    assert read_result_file(detections, scores=True).crs.is_geographic
    output = _evaluate_files(detections, truth, capsys=capsys)
    assert "EPSG:32630" in output
    assert _row(output, "illegal_mining")[1:] == ["2", "2", "2", "0", "0", "1.000", "1.000", "1.000"]
    assert "mAP@0.5 1.000" in output
    # both in WGS84: compared in the UTM zone they lie in, where the boxes are rectangles again
    both = _evaluate_files(detections, _write(tmp_path / "truth.geojson", TRUTH, TRUTH_CLASSES), capsys=capsys)
    assert "EPSG:32630" in both and "mAP@0.5 1.000" in both


def test_files_with_a_miss_a_false_positive_and_a_swap(tmp_path, capsys):
    truth = _write(tmp_path / "truth.geojson", TRUTH, TRUTH_CLASSES)
    found = [TRUTH[0], TRUTH[1], (600, 600, 640, 640)]  # misses TRUTH[2], adds a false positive
    detections = _write(tmp_path / "detections.gpkg", found, [1, 1, 1], [0.9, 0.8, 0.95])  # and calls the legal mine illegal
    output = _evaluate_files(detections, truth, capsys=capsys)
    assert _row(output, "illegal_mining")[1:6] == ["2", "3", "1", "2", "1"]
    assert _row(output, "legal_mining")[1:6] == ["1", "0", "0", "0", "1"]
    assert _row(output, "illegal_mining")[-1] == f"{0.5 * 0.5:.3f}"  # the hit ranks second: precision 1/2 at recall 1/2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.geojson", "not found"),
        (lambda d: (d / "garbage.geojson").write_text("no json") and d / "garbage.geojson", "not a readable vector file"),
        (lambda d: _feature_file(d, {"score": 0.9}), "has no 'class_id' field (fields: score)"),
        (lambda d: _feature_file(d, {"class_id": 1}), "has no 'score' field"),
        (lambda d: _feature_file(d, {"class_id": 0, "score": 0.9}), "class_id must be an integer >= 1, got 0"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(ResultFileError, match=re.escape(message)) as raised:
        read_result_file(make(tmp_path), scores=True)
    assert "\n" not in str(raised.value)


def _feature_file(folder, properties: dict):
    path = folder / "features.geojson"
    polygon = {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]]}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": properties, "geometry": polygon}]}))
    return path
