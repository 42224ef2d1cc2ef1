"""``minescan evaluate HEATMAP.tif TRUTH``: a classifier's heatmap scored per cell, with figures known by hand.

The scenes hold bright squares on cells of 64 px and are scanned by the bright
classifier with 64 px windows every 64 px, so each cell is one window and its
probability is the known ``min(1, 4 * bright share)``: a cell inside a square
is 1, a cell no square touches is 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from rasterio.transform import from_origin

from minescan.cli import main
from minescan.results.heatmap import write_heatmap
from minescan.results.heatmap_evaluation import (
    HeatmapEvaluationError, cell_labels, evaluate_heatmap, read_heatmap, roc_auc,
)
from minescan.results.window_truth import AMBIGUOUS, NEGATIVE, POSITIVE
from minescan.results.writers import write_detections
from minescan.scan.stitch import SceneDetections

CELL = 64  # px: window and stride
ORIGIN = (300000.0, 5000040.0)  # SceneSpec's, 10 m pixels, EPSG:32633
TRANSFORM = from_origin(*ORIGIN, 10.0, 10.0)
CRS = "EPSG:32633"
LABELS = {1: "illegal_mining", 2: "legal_mining"}
# Two squares on the cell grid (8 x 6 cells): A covers cells (1..2, 1..2), B cell (5, 2); both classes.
SQUARES = [(64, 64, 192, 192), (320, 128, 384, 192)]
SQUARE_CLASSES = [1, 2]


def _truth(path, boxes, classes):
    boxes = np.array(boxes, float).reshape(-1, 4)
    found = SceneDetections(boxes, np.ones(len(boxes)), np.array(classes, np.int32))
    return write_detections(path, found, transform=TRANSFORM, crs=CRS, labels=LABELS, scene="scene.tif")


@pytest.fixture(scope="module")
def heatmap(tmp_path_factory):
    """A 512 x 384 px scene of the two squares, scanned into heat.tif (uint8) and heat_float.tif; its probabilities."""
    from minescan.scan.scanner import Scanner
    from minescan.synthetic.scene import SceneSpec, Truth, write_scene
    from testkit.bright_classifier import save_bright_classifier

    folder = tmp_path_factory.mktemp("heat")
    model = save_bright_classifier(folder / "bright.onnx", size=CELL)
    scene = folder / "scene.tif"
    write_scene(scene, SceneSpec(width=512, height=384, seed=3), truth=Truth.of(SQUARES, SQUARE_CLASSES))
    result = Scanner(model).scan(scene, stride=CELL)
    result.write(folder / "heat.tif")
    result.write(folder / "heat_float.tif", as_float=True)
    return folder, result


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_scan_makes_the_map_the_tests_count_on(heatmap):
    _, result = heatmap
    bright = result.probabilities[1]
    expected = np.zeros((6, 8))
    expected[1:3, 1:3] = expected[2, 5] = 1.0
    assert result.stride == CELL and bright.shape == (6, 8)
    np.testing.assert_array_equal(bright, expected)


def test_roc_auc_ranks_with_ties_averaged():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 0], bool)) == pytest.approx(0.5)  # all tied
    # a positive tied with one of two negatives: wins 1 + 0.5 of 2 pairs
    assert roc_auc(np.array([0.2, 0.7, 0.7]), np.array([0, 0, 1], bool)) == pytest.approx(0.75)
    assert math.isnan(roc_auc(np.array([0.2, 0.3]), np.array([1, 1], bool)))


def test_cells_are_labelled_by_window_truth_in_map_coordinates():
    cell = Affine(640.0, 0, ORIGIN[0], 0, -640.0, ORIGIN[1])
    x0, y1 = ORIGIN[0] + 64 * 10 + 10 * 8, ORIGIN[1] - 64 * 10  # 128 x 128 px from (72, 64): into column 3 by 8 px
    labels = cell_labels((4, 4), cell, np.array([[x0, y1 - 1280, x0 + 1280, y1]]))
    assert labels[1, 1] == labels[2, 2] == POSITIVE  # inside the site
    assert labels[1, 3] == AMBIGUOUS  # an 8 px sliver: 1/8 of the cell, 1/16 of the site
    assert labels[0, 0] == labels[3, 1] == NEGATIVE  # untouched; touching edges do not count
    with pytest.raises(HeatmapEvaluationError, match="rotated"):
        cell_labels((2, 2), cell * Affine.rotation(10), np.zeros((0, 4)))


def test_a_perfect_map_scores_one_and_nodata_cells_are_not_negatives(heatmap):
    folder, result = heatmap
    band = read_heatmap(folder / "heat.tif")
    assert (band.label, band.band, band.labels) == ("bright", 2, ("background", "bright"))
    boxes = _truth_boxes(SQUARES)
    perfect = evaluate_heatmap(band.probability, band.transform, boxes, label=band.label)
    assert (perfect.positive, perfect.negative, perfect.ambiguous, perfect.nodata) == (5, 43, 0, 0)
    assert perfect.precision == perfect.recall == perfect.f1 == perfect.auc == 1.0
    # Cells without data: a positive cell and three negative ones become nodata: left out, never negatives.
    holes = band.probability.copy()
    holes[1, 1] = holes[0, 0] = holes[5, 7] = holes[4, 0] = np.nan
    report = evaluate_heatmap(holes, band.transform, boxes)
    assert (report.positive, report.negative, report.nodata, report.cells) == (4, 40, 4, 48)
    assert (report.true_positives, report.false_positives, report.recall, report.auc) == (4, 0, 1.0, 1.0)


def test_moved_missing_and_extra_truth_change_the_scores_as_counted_by_hand(heatmap):
    folder, _ = heatmap
    band = read_heatmap(folder / "heat.tif")

    def score(boxes):
        return evaluate_heatmap(band.probability, band.transform, _truth_boxes(boxes))

    # A moved 32 px right (96..224): half of column 3 is covered (cover 0.5 >= 0.25), so 6 positive cells, of which
    # the map finds 4 (columns 1, 2); B stays: TP 5 of 7, FP 0.
    moved = score([(96, 64, 224, 192), SQUARES[1]])
    assert (moved.positive, moved.true_positives, moved.false_positives) == (7, 5, 0)
    assert moved.recall == pytest.approx(5 / 7) and moved.precision == 1.0
    assert moved.f1 == pytest.approx(2 * (5 / 7) / (1 + 5 / 7))
    # A site the map misses (cell (6, 4)): recall 5/6; B left out of the truth: its found cell is a false positive.
    extra = score([*SQUARES, (384, 256, 448, 320)])
    assert (extra.positive, extra.true_positives, extra.recall) == (6, 5, pytest.approx(5 / 6))
    missing = score(SQUARES[:1])
    assert (missing.positive, missing.false_positives, missing.precision) == (4, 1, pytest.approx(4 / 5))
    # A 64 px site shifted 8 px: its sliver in the next cell is ambiguous, left out.
    sliver = score([SQUARES[0], (328, 128, 392, 192)])
    assert (sliver.ambiguous, sliver.positive, sliver.recall) == (1, 5, 1.0)


def test_the_command_line_prints_the_figures_and_reprojected_truth_scores_the_same(heatmap, capsys):
    folder, _ = heatmap
    utm = _truth(folder / "truth.gpkg", SQUARES, SQUARE_CLASSES)
    wgs84 = _truth(folder / "truth.geojson", SQUARES, SQUARE_CLASSES)
    code, out, _ = _cli(capsys, folder / "heat.tif", utm)
    assert code == 0
    assert "(band 2 of 2, 'bright'; 8 x 6 cells of 640 m)" in out
    assert "(2 objects of classes 1 illegal_mining, 2 legal_mining as positive) in EPSG:32633" in out
    assert "cells 48, each judged on itself: 5 positive, 43 negative scored; 0 ambiguous and 0 nodata left out" in out
    assert "bright at probability >= 0.5: TP 5  FP 0  FN 0  TN 43" in out
    assert "precision 1.000  recall 1.000  F1 1.000  ROC AUC 1.000" in out
    assert _cli(capsys, folder / "heat.tif", wgs84)[1].split("\n")[1:] == out.split("\n")[1:]  # every figure the same
    assert _cli(capsys, folder / "heat_float.tif", wgs84)[1].split("\n")[1:] == out.split("\n")[1:]
    # Only class 1 counts: B (class 2) is no longer truth, so its found cell is a false positive.
    code, out, _ = _cli(capsys, folder / "heat.tif", utm, "--truth-classes", "1", "--threshold", "0.9")
    assert "(1 object of class 1 illegal_mining as positive)" in out
    assert "bright at probability >= 0.9: TP 4  FP 1  FN 0  TN 43" in out and "precision 0.800  recall 1.000" in out
    # The other band: background is 1 - bright, so against the mining truth it ranks every cell wrong.
    code, out, _ = _cli(capsys, folder / "heat.tif", utm, "--label", "background")
    assert "'background'" in out and "TP 0  FP 43  FN 5  TN 0" in out and "ROC AUC 0.000" in out


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the heatmap without a CRS, on purpose
def test_errors_are_one_line_and_name_what_is_wrong(heatmap, tmp_path, capsys):
    folder, _ = heatmap
    truth = _truth(tmp_path / "truth.geojson", SQUARES, SQUARE_CLASSES)
    code, _, err = _cli(capsys, folder / "heat.tif", truth, "--label", "mining")
    assert code == 1 and "heat.tif: no band 'mining'; its bands: background, bright" in err
    code, _, err = _cli(capsys, folder / "scene.tif", truth)
    assert code == 1 and "scene.tif: not a heatmap (4 uint16 band(s)" in err
    no_crs = tmp_path / "no_crs.tif"
    write_heatmap(no_crs, np.zeros((1, 3, 3), np.float32), transform=None, crs=None, stride=1, labels=["mining"])
    code, _, err = _cli(capsys, no_crs, truth)
    assert code == 1 and "no_crs.tif: has no CRS" in err
    code, _, err = _cli(capsys, truth, truth, "--threshold", "0.3")
    assert code == 1 and "--threshold score(s) a heatmap (HEATMAP.tif); " in err
    code, _, err = _cli(capsys, folder / "heat.tif", truth, "--iou", "0.3", "--score-threshold", "0.2")
    assert code == 1 and "--iou, --score-threshold score(s) detections; " in err and "heat.tif is a heatmap" in err
    code, _, err = _cli(capsys, tmp_path / "absent.tif", truth)
    assert code == 1 and "absent.tif: not found" in err and err.count("\n") == 1


def test_robustness_refuses_a_classifier_in_one_line(heatmap, capsys):
    folder, _ = heatmap
    truth = _truth(folder / "truth_r.geojson", SQUARES, SQUARE_CLASSES)
    code, _, err = _cli(capsys, "--robustness", "--model", folder / "bright.onnx", folder / "scene.tif", truth)
    assert code == 1 and "--robustness scores detectors" in err and "is a tile classifier" in err
    assert err.count("\n") == 1


def _truth_boxes(pixel_boxes):
    """Pixel boxes as map boxes (xmin, ymin, xmax, ymax) in the scene's UTM zone."""
    boxes = np.array(pixel_boxes, float).reshape(-1, 4)
    x0, y0 = TRANSFORM * (boxes[:, 0], boxes[:, 1])
    x1, y1 = TRANSFORM * (boxes[:, 2], boxes[:, 3])
    return np.column_stack([x0, y1, x1, y0])


def test_a_cell_is_judged_on_the_window_centred_on_it_when_the_heatmap_records_its_window():
    from affine import Affine

    # one 16 px site in cell (2, 2) of a 32 px grid; windows of 64 px (2 cells) every 32 px
    site = np.array([[72.0, 72.0, 88.0, 88.0]])
    per_cell = cell_labels((6, 6), Affine.scale(32), site)
    per_window = cell_labels((6, 6), Affine.scale(32), site, window_cells=2.0)
    assert per_cell[2, 2] == 1 and (per_cell == 1).sum() == 1 and (per_cell == 0).sum() == 35
    # the 64 px window centred on a side neighbour holds half the site: positive; on a corner neighbour a
    # quarter: ambiguous, left out
    assert per_window[1:4, 1:4].tolist() == [[-1, 1, -1], [1, 1, 1], [-1, 1, -1]] and (per_window == 1).sum() == 5
    # a map that is high exactly there scores 1 per window, but per cell reads its neighbours as false positives
    probability = np.zeros((6, 6))
    probability[1:4, 1:4] = 0.9
    assert evaluate_heatmap(probability, Affine.scale(32), site, window_cells=2.0).f1 == 1.0
    assert evaluate_heatmap(probability, Affine.scale(32), site).precision == pytest.approx(1 / 9)
