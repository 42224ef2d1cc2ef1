"""Dropping a box that is a part of a larger object of another class (minescan.scan.parts)."""

import json

import numpy as np
import pytest

from minescan.cli import main
from minescan.demo import shipped_model
from minescan.engine import load_detector
from minescan.model.metadata import MetadataError, Postprocessing, parse_metadata
from minescan.results.evaluation import match
from minescan.scan.scanner import Scanner
from minescan.synthetic.mining import MiningSpec, write_mining_scene
from minescan.scan.parts import PartsError, part_mask
from minescan.scan.stitch import StitchSettings
from tests.test_stitch import _stitch

MINE = (100, 100, 200, 180)  # a large box of class 2
PIT_80 = (110, 110, 130, 130)  # class 1, wholly inside the mine
PIT_HALF = (190, 150, 210, 170)  # class 1, half inside


def test_a_small_box_mostly_inside_a_larger_box_of_another_class_is_a_part():
    boxes = np.array([MINE, PIT_80, PIT_HALF], float)
    assert part_mask(boxes, np.array([2, 1, 1]), 0.7).tolist() == [False, True, False]
    assert part_mask(boxes, np.array([2, 1, 1]), 0.5).tolist() == [False, True, True]
    assert part_mask(boxes, np.array([1, 1, 1]), 0.5).tolist() == [False, False, False]  # one class: never
    assert part_mask(boxes, np.array([2, 1, 1]), 0).tolist() == [False, False, False]  # 0: off


def test_the_larger_box_is_never_the_part_and_a_smaller_container_does_not_count():
    inner, outer = (10, 10, 20, 20), (0, 0, 100, 100)
    assert part_mask(np.array([outer, inner], float), np.array([1, 2]), 0.9).tolist() == [False, True]
    assert part_mask(np.array([inner, (10, 10, 20, 20)], float), np.array([1, 2]), 0.9).tolist() == [False, False]  # equal size
    assert part_mask(np.zeros((0, 4)), np.zeros(0, int), 0.7).tolist() == []


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(PartsError, match=str(fraction)):
        part_mask(np.array([MINE], float), np.array([1]), fraction)


def test_the_stitcher_drops_parts_once_objects_are_whole_across_tiles():
    # The mine spans a tile border (tiles of 256, overlap 64: a border at 192); the pit sits in it.
    mine, pit = ((150, 100, 300, 220), 2), ((160, 110, 180, 130), 1)
    kept = _stitch(600, 400, 256, 64, [mine, pit])
    assert sorted(kept.classes.tolist()) == [1, 2]
    dropped = _stitch(600, 400, 256, 64, [mine, pit], StitchSettings(drop_parts=0.7))
    assert dropped.classes.tolist() == [2] and dropped.boxes.tolist() == [[150, 100, 300, 220]]


def test_postprocessing_metadata_reads_back_and_rejects_nonsense():
    assert parse_metadata({"minescan.postprocessing": json.dumps({"drop_parts": 0.7})}).postprocessing == Postprocessing(drop_parts=0.7)
    assert parse_metadata({}).postprocessing == Postprocessing(drop_parts=None)
    with pytest.raises(MetadataError, match="minescan.postprocessing"):
        parse_metadata({"minescan.postprocessing": json.dumps({"drop_parts": 7})})


@pytest.fixture(scope="module")
def scene_with_a_part(tmp_path_factory):
    """Seed 37 at 1536 px: the demo detector calls a bench of one legal mine an illegal pit."""
    path = tmp_path_factory.mktemp("parts") / "scene.tif"
    layout = write_mining_scene(path, MiningSpec(width=1536, height=1536, seed=37))
    return path, layout.truth()


def test_the_demo_detector_drops_its_part_false_positive_by_its_own_metadata(scene_with_a_part):
    path, truth = scene_with_a_part
    detector = load_detector(shipped_model("fp32"))
    assert detector.metadata.postprocessing == Postprocessing(drop_parts=0.7)
    scanner = Scanner(detector)
    everything = scanner.scan(path, drop_parts=0).detections
    default = scanner.scan(path).detections
    parts = part_mask(everything.boxes, everything.classes, 0.7)
    assert parts.sum() >= 1 and len(default) == len(everything) - parts.sum()
    assert not part_mask(default.boxes, default.classes, 0.7).any()
    # Every dropped box was a false positive, so recall stays and precision rises.
    found = match(everything.boxes, everything.scores, everything.classes, truth.boxes, truth.classes, 0.5)
    assert (found.truth_index[parts] < 0).all() and set(everything.classes[parts].tolist()) == {1}
    kept = match(default.boxes, default.scores, default.classes, truth.boxes, truth.classes, 0.5)
    assert (kept.truth_index >= 0).sum() == (found.truth_index >= 0).sum()


def test_scan_drop_parts_zero_keeps_them(scene_with_a_part, tmp_path, capsys):
    path, _ = scene_with_a_part
    counts = {}
    for flag in ([], ["--drop-parts", "0"]):
        out = tmp_path / f"r{len(flag)}.geojson"
        assert main(["scan", str(path), "--model", str(shipped_model("fp32")), "--out", str(out), *flag]) == 0
        counts[len(flag)] = len(json.loads(out.read_text())["features"])
    assert counts[2] == counts[0] + 1
    capsys.readouterr()
    refused = main(["scan", str(path), "--model", str(shipped_model("fp32")), "--drop-parts", "2", "--out", str(tmp_path / "x.geojson")])
    assert refused == 1 and "--drop-parts 2.0 is out of range: must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.geojson").exists()
